//! `h8s tenant create|ls|rm` and `h8s user create|ls|rm|passwd`: operators manage
//! `tenancy.h8s.io/v1` Tenants and Users through the Kubernetes API (kube-rs), with the
//! admin kubeconfig; a password goes to the `users/password` subresource and is never
//! read back.

use std::path::PathBuf;

use anyhow::{bail, Context};
use h8s_client::kube;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct Conn {
    /// The kubeconfig of an admin (default: `$KUBECONFIG`, else the data dir's
    /// admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum TenantCommand {
    /// Creates a tenant.
    Create {
        name: String,
        #[arg(long = "display-name")]
        display_name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lists tenants.
    Ls {
        #[command(flatten)]
        conn: Conn,
    },
    /// Deletes a tenant.
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Creates a user in a tenant and sets its password (asked for, or `--password-stdin`).
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long = "display-name")]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// A role in the tenant (admin, member, reader); repeatable; default member.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Extra groups.
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        /// Create the user without a password (it cannot log in until `passwd`).
        #[arg(long = "no-password", conflicts_with = "password_stdin")]
        no_password: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Lists users, optionally of one tenant.
    Ls {
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deletes a user (its tokens stop working at once).
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Sets a user's password (its tokens stop working at once).
    Passwd {
        name: String,
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: h8s_types::tenancy::GROUP.into(),
        version: h8s_types::tenancy::VERSION.into(),
        api_version: h8s_types::tenancy::API_VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

async fn client(conn: &Conn) -> anyhow::Result<kube::Client> {
    let path = match &conn.kubeconfig {
        Some(p) => p.clone(),
        None => match std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
            Some(k) => std::env::split_paths(&k)
                .next()
                .context("KUBECONFIG is empty")?,
            None => crate::server::default_data_dir().join("admin.kubeconfig"),
        },
    };
    h8s_client::from_kubeconfig(&path)
        .await
        .with_context(|| format!("connecting with {}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn object(kind: &str, name: &str, spec: Value) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": h8s_types::tenancy::API_VERSION, "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))?)
}

fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("{} ({})", s.message, s.code),
        other => anyhow::Error::new(other),
    }
}

pub fn tenant(cmd: TenantCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let ar = resource("Tenant", "tenants");
        match cmd {
            TenantCommand::Create {
                name,
                display_name,
                description,
                conn,
            } => {
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                let mut spec = json!({});
                if let Some(d) = display_name {
                    spec["displayName"] = json!(d);
                }
                if let Some(d) = description {
                    spec["description"] = json!(d);
                }
                api.create(&PostParams::default(), &object("Tenant", &name, spec)?)
                    .await
                    .map_err(api_error)?;
                println!("tenant/{name} created");
            }
            TenantCommand::Ls { conn } => {
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                let list = api.list(&ListParams::default()).await.map_err(api_error)?;
                println!(
                    "{:<24} {:<32} {:<8} PHASE",
                    "NAME", "DISPLAY NAME", "ENABLED"
                );
                for t in list.items {
                    let d = &t.data;
                    println!(
                        "{:<24} {:<32} {:<8} {}",
                        t.metadata.name.unwrap_or_default(),
                        d.pointer("/spec/displayName")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        d.pointer("/spec/enabled").and_then(Value::as_bool) != Some(false),
                        d.pointer("/status/phase")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                    );
                }
            }
            TenantCommand::Rm { name, conn } => {
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(api_error)?;
                println!("tenant/{name} deleted");
            }
        }
        Ok(())
    })
}

fn read_new_password(stdin: bool, name: &str) -> anyhow::Result<String> {
    if stdin {
        return crate::login::stdin_password();
    }
    let a = crate::login::prompt_password(&format!("New password for {name}: "))?;
    let b = crate::login::prompt_password("Again: ")?;
    if a != b {
        bail!("the passwords differ");
    }
    Ok(a)
}

async fn set_password(api: &Api<DynamicObject>, name: &str, pw: String) -> anyhow::Result<()> {
    let body = json!({"apiVersion": h8s_types::tenancy::API_VERSION,
        "kind": h8s_types::tenancy::PASSWORD_KIND, "password": pw});
    let _: Value = api
        .create_subresource("password", name, &PostParams::default(), &body)
        .await
        .map_err(api_error)?;
    Ok(())
}

pub fn user(cmd: UserCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let ar = resource("User", "users");
        match cmd {
            UserCommand::Create {
                name,
                tenant,
                display_name,
                email,
                roles,
                groups,
                password_stdin,
                no_password,
                conn,
            } => {
                let pw = if no_password {
                    None
                } else {
                    Some(read_new_password(password_stdin, &name)?)
                };
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                let mut spec = json!({"tenant": tenant});
                if let Some(d) = display_name {
                    spec["displayName"] = json!(d);
                }
                if let Some(e) = email {
                    spec["email"] = json!(e);
                }
                if !roles.is_empty() {
                    spec["roles"] = json!(roles);
                }
                if !groups.is_empty() {
                    spec["groups"] = json!(groups);
                }
                api.create(&PostParams::default(), &object("User", &name, spec)?)
                    .await
                    .map_err(api_error)?;
                if let Some(pw) = pw {
                    if let Err(e) = set_password(&api, &name, pw).await {
                        // No half-made user without the password the operator asked for.
                        let _ = api.delete(&name, &DeleteParams::default()).await;
                        return Err(e.context("setting the password (the user was removed again)"));
                    }
                }
                println!("user/{name} created");
            }
            UserCommand::Ls { tenant, conn } => {
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                let mut lp = ListParams::default();
                if let Some(t) = &tenant {
                    lp = lp.fields(&format!("spec.tenant={t}"));
                }
                let list = api.list(&lp).await.map_err(api_error)?;
                println!(
                    "{:<24} {:<16} {:<16} {:<8} EMAIL",
                    "NAME", "TENANT", "ROLES", "ENABLED"
                );
                for u in list.items {
                    let d = &u.data;
                    let roles: Vec<&str> = d
                        .pointer("/spec/roles")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<24} {:<16} {:<16} {:<8} {}",
                        u.metadata.name.unwrap_or_default(),
                        d.pointer("/spec/tenant")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                        roles.join(","),
                        d.pointer("/spec/enabled").and_then(Value::as_bool) != Some(false),
                        d.pointer("/spec/email")
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                    );
                }
            }
            UserCommand::Rm { name, conn } => {
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(api_error)?;
                println!("user/{name} deleted");
            }
            UserCommand::Passwd {
                name,
                password_stdin,
                conn,
            } => {
                let pw = read_new_password(password_stdin, &name)?;
                let api: Api<DynamicObject> = Api::all_with(client(&conn).await?, &ar);
                set_password(&api, &name, pw).await?;
                println!("user/{name} password changed");
            }
        }
        Ok(())
    })
}
