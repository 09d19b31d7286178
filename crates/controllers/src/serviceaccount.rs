//! Not built yet: this controller does nothing so far (placeholder so the crate builds while
//! its controller is written).

use crate::{Context, Error};

pub async fn run(_ctx: Context) -> Result<(), Error> {
    std::future::pending().await
}
