#!/usr/bin/env python3
"""The Python `kubernetes` client against a running `h8s server`.

Run by crates/h8s/tests/api_python.rs, which starts the server and passes
H8S_KUBECONFIG. Standalone: H8S_KUBECONFIG=~/.local/share/h8s/admin.kubeconfig python3 tests/python/test_api.py
"""
import os
import sys
import threading
import time
import unittest

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def api_client():
    return config.new_client_from_config(config_file=os.environ["H8S_KUBECONFIG"])


class H8sApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = api_client()
        cls.core = client.CoreV1Api(cls.api)
        cls.apps = client.AppsV1Api(cls.api)

    def test_version(self):
        v = client.VersionApi(self.api).get_code()
        self.assertEqual(v.major, "1")
        self.assertTrue(v.git_version.startswith("v1."))

    def test_namespace_and_configmap_crud(self):
        ns = "py-crud"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        names = [n.metadata.name for n in self.core.list_namespace().items]
        self.assertIn(ns, names)
        cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c", labels={"k": "v"}), data={"a": "1"})
        created = self.core.create_namespaced_config_map(ns, cm)
        self.assertTrue(created.metadata.uid)
        self.assertTrue(created.metadata.resource_version)
        got = self.core.read_namespaced_config_map("c", ns)
        self.assertEqual(got.data, {"a": "1"})
        got.data["b"] = "2"
        updated = self.core.replace_namespaced_config_map("c", ns, got)
        self.assertNotEqual(updated.metadata.resource_version, got.metadata.resource_version)
        # A stale resourceVersion is a 409 Conflict.
        got.data["c"] = "3"
        with self.assertRaises(ApiException) as e:
            self.core.replace_namespaced_config_map("c", ns, got)
        self.assertEqual(e.exception.status, 409)
        patched = self.core.patch_namespaced_config_map("c", ns, {"data": {"p": "q"}})
        self.assertEqual(patched.data["p"], "q")
        lst = self.core.list_namespaced_config_map(ns, label_selector="k=v")
        self.assertEqual([i.metadata.name for i in lst.items], ["c"])
        self.assertTrue(lst.metadata.resource_version)
        self.core.delete_namespaced_config_map("c", ns)
        with self.assertRaises(ApiException) as e:
            self.core.read_namespaced_config_map("c", ns)
        self.assertEqual(e.exception.status, 404)
        self.core.delete_namespace(ns)

    def test_paging(self):
        ns = "py-page"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        for i in range(7):
            self.core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"c{i}")))
        seen, cont = [], None
        while True:
            page = self.core.list_namespaced_config_map(ns, limit=3, _continue=cont)
            self.assertLessEqual(len(page.items), 3)
            seen += [i.metadata.name for i in page.items]
            cont = page.metadata._continue
            if not cont:
                break
        # kube-root-ca.crt (published in every namespace by the ServiceAccount controller) may be there.
        self.assertEqual([n for n in seen if n != "kube-root-ca.crt"], [f"c{i}" for i in range(7)])

    def test_watch(self):
        ns = "py-watch"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self.core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="before")))

        def later():
            time.sleep(0.5)
            self.core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="after")))
            self.core.delete_namespaced_config_map("after", ns)

        threading.Thread(target=later).start()
        events = []
        w = watch.Watch()
        for ev in w.stream(self.core.list_namespaced_config_map, ns, timeout_seconds=3):
            events.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()
        self.assertIn(("ADDED", "before"), events)
        self.assertIn(("ADDED", "after"), events)
        self.assertIn(("DELETED", "after"), events)

    def test_deployment_and_scale(self):
        dep = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="d"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels={"app": "d"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "d"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
                ),
            ),
        )
        self.apps.create_namespaced_deployment("default", dep)
        sc = self.apps.read_namespaced_deployment_scale("d", "default")
        self.assertEqual(sc.spec.replicas, 1)
        self.assertEqual(sc.status.selector, "app=d")
        self.apps.patch_namespaced_deployment_scale("d", "default", {"spec": {"replicas": 3}})
        self.assertEqual(self.apps.read_namespaced_deployment("d", "default").spec.replicas, 3)
        self.apps.delete_namespaced_deployment("d", "default")

    def test_invalid_pod_is_422(self):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}}
        with self.assertRaises(ApiException) as e:
            self.core.create_namespaced_pod("default", pod)
        self.assertEqual(e.exception.status, 422)
        self.assertIn("spec.containers[0].image", e.exception.body)

    def test_missing_namespace_is_404(self):
        with self.assertRaises(ApiException) as e:
            self.core.create_namespaced_config_map("nope", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
        self.assertEqual(e.exception.status, 404)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
