"""A one-node Kubernetes cluster made of real components, started by the tests.

The control plane of tests/e2e/controlplane.py (etcd, kube-apiserver) plus kube-scheduler,
kube-controller-manager, a kubelet on containerd and runc, kube-proxy and CoreDNS: every
Kubernetes binary built by tests/controlplane/build.sh from the pinned k8s.io/kubernetes
module, containerd, runc and the CNI plugins from Debian's packages. Nothing is pulled: the
pause, echo and CoreDNS images are packed here (tests/cluster/oci.py), other images come as
archives (`podman save`) and are imported with `ctr images import`.

It is brought up one step at a time, each step on top of the last: `runtime` (containerd),
`node` (control plane, kubelet, a Ready Node), `workloads` (scheduler, controller-manager),
`services` (kube-proxy, CoreDNS). A step the machine refuses is remembered with the error
that refused it, so the tests of that step and those above it skip with that error while the
steps below keep running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from privpoll.local.embedded import free_port
from tests.cluster.oci import File, write_image
from tests.e2e.controlplane import ROOT, ControlPlane, binaries
from tests.environment import need

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("PRIVPOLL_CACHE", Path.home() / ".cache" / "privpoll"))
STEPS = ("runtime", "node", "workloads", "services")
NODE_NAME = "privpoll-node"
PAUSE_IMAGE = "localhost/privpoll-pause:1"
ECHO_IMAGE = "localhost/privpoll-echo:1"
COREDNS_IMAGE = "localhost/privpoll-coredns:1"
POD_SUBNET = "10.244.0.0/24"
SERVICE_RANGE = "10.0.0.0/24"  # as tests/e2e/controlplane.py gives the API server
DNS_IP = "10.0.0.10"
BRIDGE = "privpoll0"


class Refused(Exception):
    """A step of the bring-up that this machine refused; the message carries the error."""


def _run(argv: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if done.returncode != 0:
        raise Refused(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def node_address() -> str:
    """The host's address on its default route: pods reach the API server there."""
    routes = json.loads(_run(["ip", "-j", "-4", "route", "show", "default"]).stdout or "[]")
    if not routes:
        raise Refused("the machine has no IPv4 default route, so pods could not reach the API")
    device = routes[0]["dev"]
    for link in json.loads(_run(["ip", "-j", "-4", "addr", "show", "dev", device]).stdout):
        for address in link.get("addr_info", []):
            return str(address["local"])
    raise Refused(f"{device}, the default route's device, has no IPv4 address")


@dataclass
class Cluster:
    root: Path
    # Image archives (OCI or docker format, e.g. from `podman save`) to import into the node.
    archives: list[Path] = field(default_factory=list)
    plane: ControlPlane | None = None
    bins: dict[str, str] = field(default_factory=dict)
    reached: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cgroups_before: set[Path] = field(default_factory=set)
    _lock: IO[str] | None = None

    # --- paths -------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args], timeout)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        assert self.plane is not None
        return self.plane.kubectl(*args, stdin=stdin, check=check).stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    # --- the ladder --------------------------------------------------------------------
    def reach(self, step: str) -> None:
        """Bring the cluster up to `step`; skip-worthy refusals raise Refused."""
        for earlier in STEPS[: STEPS.index(step) + 1]:
            if earlier in self.refused:
                raise Refused(f"step {earlier!r} was refused: {self.refused[earlier]}")
            if earlier in self.reached:
                continue
            started = time.monotonic()
            try:
                getattr(self, f"_start_{earlier}")()
            except Refused as error:
                self.refused[earlier] = str(error)
                raise
            self.timings[earlier] = round(time.monotonic() - started, 1)
            self.reached.append(earlier)

    def _start_runtime(self) -> None:
        for tool in ("containerd", "ctr", "runc", "ip", "iptables", "openssl"):
            need(shutil.which(tool) is not None, f"{tool} (make cluster-deps installs it)")
        cni_bin = Path("/usr/lib/cni")
        need((cni_bin / "bridge").exists(), "the CNI plugins (make cluster-deps installs them)")
        need(os.geteuid() == 0, "root (containerd and the kubelet need it)")
        self.root.mkdir(parents=True, exist_ok=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        # One node per machine at a time: kube-proxy's iptables chains and the bridge are
        # the machine's, not the test's.
        self._lock = (CACHE / "cluster.lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        images = self._build_images()
        state = self.root / "containerd"
        cni_conf = self.root / "cni"
        cni_conf.mkdir(parents=True)
        config = string.Template((HERE / "containerd.toml").read_text()).substitute(
            root=state / "root",
            state=state / "state",
            socket=self.socket,
            pause_image=PAUSE_IMAGE,
            runc=shutil.which("runc"),
            cni_bin=cni_bin,
            cni_conf=cni_conf,
        )
        (state).mkdir(parents=True, exist_ok=True)
        (state / "config.toml").write_text(config)
        self._write_cni(cni_conf)
        self._spawn("containerd", ["containerd", "--config", str(state / "config.toml")])
        self._wait("containerd", self.socket.exists, 30)
        self._wait("containerd", lambda: self._ok(["ctr", "-a", str(self.socket), "version"]), 30)
        for archive in [*images, *self.archives]:
            self.ctr("images", "import", str(archive), timeout=600)

    def _build_images(self) -> list[Path]:
        """The pause and echo images, packed from static Go binaries."""
        out = self.root / "images"
        out.mkdir(parents=True, exist_ok=True)
        archives = []
        for name, image in (("pause", PAUSE_IMAGE), ("echo", ECHO_IMAGE)):
            binary = out / name
            _run(
                ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), f"./{name}"],
                timeout=600,
                cwd=HERE / "images",
                env={**os.environ, "CGO_ENABLED": "0"},
            )
            archive = out / f"{name}.tar"
            write_image(archive, image, [File(f"/{name}", binary.read_bytes())], [f"/{name}"])
            archives.append(archive)
        return archives

    def _write_cni(self, folder: Path) -> None:
        network = {
            "cniVersion": "0.4.0",
            "name": "privpoll",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        # Leases in the test's folder, not the machine's /var/lib/cni.
                        "dataDir": str(self.root / "cni-leases"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (folder / "10-privpoll.conflist").write_text(json.dumps(network, indent=2))

    def _start_node(self) -> None:
        self.cgroups_before = set(Path("/sys/fs/cgroup").glob("*/kubepods"))
        pki = self.root / "pki"
        pki.mkdir()
        host = node_address()
        self._certificates(pki)
        self.plane = ControlPlane(
            self.root / "controlplane",
            host=host,
            authorization="Node,RBAC",
            apiserver_args=[
                "--client-ca-file", str(pki / "ca.crt"),
                "--kubelet-client-certificate", str(pki / "apiserver-kubelet.crt"),
                "--kubelet-client-key", str(pki / "apiserver-kubelet.key"),
                # The node's name resolves nowhere; its address does.
                "--kubelet-preferred-address-types", "InternalIP",
            ],
        )  # fmt: skip
        self.plane.start("cluster")
        self.bins = binaries("cluster")
        port, healthz = free_port(), free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            # This kernel mounts cgroup v1 controllers beside a v2 hierarchy (hybrid);
            # Kubernetes 1.34 still runs on v1 when told not to refuse it.
            "failCgroupV1": False,
            "podLogsDir": str(self.root / "pod-logs"),
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "failSwapOn": False,
            "clusterDNS": [DNS_IP],
            "clusterDomain": "cluster.local",
            "address": host,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            # The disk and memory are shared with other work: evict nothing, and never
            # collect the imported images (nothing could pull them back).
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "resolvConf": "/etc/resolv.conf",
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "protectKernelDefaults": False,
            "makeIPTablesUtilChains": False,
        }
        for key, value in json.loads(os.environ.get("PRIVPOLL_KUBELET_CONFIG", "{}")).items():
            config[key] = value
        (self.root / "kubelet.json").write_text(json.dumps(config, indent=2))
        self._kubeconfig(pki, "kubelet")
        self._spawn(
            "kubelet",
            [
                self.bins["KUBELET_BIN"],
                "--config", str(self.root / "kubelet.json"),
                "--kubeconfig", str(self.root / "kubelet.kubeconfig"),
                "--root-dir", str(self.kubelet_dir),
                "--cert-dir", str(pki / "kubelet-serving"),
                "--hostname-override", NODE_NAME,
                "--node-ip", host,
                "--v", "2",
            ],
        )  # fmt: skip
        self._wait("kubelet", self._node_ready, 120)

    def _node_ready(self) -> bool:
        assert self.plane is not None
        done = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if done.returncode != 0:
            return False
        conditions = json.loads(done.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_workloads(self) -> None:
        assert self.plane is not None
        pki = self.root / "pki"
        for name in ("kube-scheduler", "kube-controller-manager"):
            self._kubeconfig(pki, name)
        self._spawn(
            "kube-scheduler",
            [
                self.bins["KUBE_SCHEDULER_BIN"],
                "--kubeconfig", str(self.root / "kube-scheduler.kubeconfig"),
                "--authentication-kubeconfig", str(self.root / "kube-scheduler.kubeconfig"),
                "--authorization-kubeconfig", str(self.root / "kube-scheduler.kubeconfig"),
                "--bind-address", "127.0.0.1",
                "--secure-port", str(free_port()),
                "--leader-elect=false",
            ],
        )  # fmt: skip
        self._spawn(
            "kube-controller-manager",
            [
                self.bins["KUBE_CONTROLLER_MANAGER_BIN"],
                "--kubeconfig", str(self.root / "kube-controller-manager.kubeconfig"),
                "--authentication-kubeconfig",
                str(self.root / "kube-controller-manager.kubeconfig"),
                "--authorization-kubeconfig",
                str(self.root / "kube-controller-manager.kubeconfig"),
                "--bind-address", "127.0.0.1",
                "--secure-port", str(free_port()),
                "--leader-elect=false",
                "--use-service-account-credentials",
                "--service-account-private-key-file", str(self.plane.root / "sa.key"),
                "--root-ca-file", self.plane.ca,
                "--service-cluster-ip-range", SERVICE_RANGE,
            ],
        )  # fmt: skip
        # The controller-manager's ServiceAccount controller makes `default` in each namespace.
        plane = self.plane
        self._wait(
            "kube-controller-manager",
            lambda: (
                plane.kubectl("get", "sa", "default", "-n", "default", check=False).returncode == 0
            ),
            90,
        )

    def plane_kubectl(self) -> str:
        assert self.plane is not None
        return self.plane.kubectl_bin

    def _start_services(self) -> None:
        assert self.plane is not None
        pki = self.root / "pki"
        self._kubeconfig(pki, "kube-proxy")
        self._spawn(
            "kube-proxy",
            [
                self.bins["KUBE_PROXY_BIN"],
                "--kubeconfig", str(self.root / "kube-proxy.kubeconfig"),
                "--hostname-override", NODE_NAME,
                "--proxy-mode", "iptables",
                "--cluster-cidr", POD_SUBNET,
                "--healthz-bind-address", f"127.0.0.1:{free_port()}",
                "--metrics-bind-address", f"127.0.0.1:{free_port()}",
                # Leave the machine's conntrack table size alone.
                "--conntrack-max-per-core", "0",
                "--v", "2",
            ],
        )  # fmt: skip
        coredns = self.root / "images" / "coredns.tar"
        binary = Path(self.bins["COREDNS_BIN"]).read_bytes()
        write_image(coredns, COREDNS_IMAGE, [File("/coredns", binary)], ["/coredns"])
        self.ctr("images", "import", str(coredns), timeout=600)
        manifest = string.Template((HERE / "coredns.yaml").read_text()).substitute(
            image=COREDNS_IMAGE, dns_ip=DNS_IP
        )
        self.kubectl("apply", "-f", "-", stdin=manifest)
        self.kubectl(
            "rollout", "status", "-n", "kube-system", "deployment/coredns", "--timeout=180s"
        )

    # --- plumbing ----------------------------------------------------------------------
    def _certificates(self, pki: Path) -> None:
        """A CA and the client certificates of the node's components (CN user, O group)."""
        _run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
             "-subj", "/CN=privpoll-test-ca"],
        )  # fmt: skip
        users = {
            "kubelet": f"/O=system:nodes/CN=system:node:{NODE_NAME}",
            "kube-scheduler": "/CN=system:kube-scheduler",
            "kube-controller-manager": "/CN=system:kube-controller-manager",
            "kube-proxy": "/CN=system:kube-proxy",
            "apiserver-kubelet": "/O=system:masters/CN=kube-apiserver-kubelet-client",
        }
        for name, subject in users.items():
            key, csr, crt = (pki / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
            _run(
                ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                 "-out", str(csr), "-subj", subject],
            )  # fmt: skip
            _run(
                ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
                 "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-out", str(crt)],
            )  # fmt: skip

    def _kubeconfig(self, pki: Path, name: str) -> None:
        assert self.plane is not None
        (self.root / f"{name}.kubeconfig").write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": self.plane.server,
                                "certificate-authority": self.plane.ca,
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": name,
                            "user": {
                                "client-certificate": str(pki / f"{name}.crt"),
                                "client-key": str(pki / f"{name}.key"),
                            },
                        }
                    ],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": name}}],
                    "current-context": "test",
                }
            )
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @staticmethod
    def _ok(argv: list[str]) -> bool:
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.root / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise Refused(
                    f"{name} exited {self.processes[name].returncode}:\n{self.log_tail(name)}"
                )
            if check():
                return
            time.sleep(0.5)
        raise Refused(f"{name} was not ready after {timeout:.0f} s:\n{self.log_tail(name)}")

    # --- teardown ----------------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything, leaving the machine as it was (pods, netns, iptables, mounts)."""
        if self.plane is not None and "kubelet" in self.processes:
            self._drain()
        for name in ("kube-proxy", "kube-controller-manager", "kube-scheduler", "kubelet"):
            self._stop_process(name)
        if "containerd" in self.processes:
            with contextlib.suppress(Refused, subprocess.TimeoutExpired):
                for task in self.ctr("tasks", "ls", "-q").stdout.split():
                    self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=30)
            self._stop_process("containerd")
        self._kill_shims()
        if "kube-proxy" in self.processes:
            subprocess.run(
                [self.bins["KUBE_PROXY_BIN"], "--cleanup"], capture_output=True, check=False
            )
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        if "kubelet" in self.processes:
            self._kubelet_leftovers()
            self._remove_cgroups()
        if "containerd" in self.processes:
            self._cni_leftovers()
        self._unmount()
        if self.plane is not None:
            self.plane.stop()
        if self._lock is not None:
            self._lock.close()

    def _drain(self) -> None:
        """Delete every workload and pod so that the kubelet tears each sandbox down
        (network namespace, CNI leases, iptables rules) through containerd."""
        kubectl = [self.plane_kubectl(), "--kubeconfig", str(self.plane.kubeconfig)]  # type: ignore[union-attr]
        for kinds in ("deployments,replicasets,statefulsets,daemonsets,jobs", "pods"):
            subprocess.run(
                [*kubectl, "delete", kinds, "--all", "-A", "--wait=false", "--grace-period=2"],
                capture_output=True,
                timeout=60,
                check=False,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(Refused, subprocess.TimeoutExpired):
                if not self.ctr("tasks", "ls", "-q").stdout.split():
                    return
            time.sleep(1)

    def _stop_process(self, name: str) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _kill_shims(self) -> None:
        """containerd's shims outlive it; ours name our socket on their command line."""
        mark = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if mark in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), 9)

    def _kubelet_leftovers(self) -> None:
        """The kubelet's KUBE-FIREWALL chain (it guards 127.0.0.0/8 from other hosts) and its
        links in /var/log/containers to this node's logs: the only two things it writes
        outside its folders."""
        for family in ("iptables", "ip6tables"):
            for hook in ("INPUT", "OUTPUT"):
                while (
                    subprocess.run(
                        [family, "-w", "-D", hook, "-j", "KUBE-FIREWALL"], capture_output=True
                    ).returncode
                    == 0
                ):
                    pass
            for step in ("-F", "-X"):
                subprocess.run([family, "-w", step, "KUBE-FIREWALL"], capture_output=True)
        links = Path("/var/log/containers")
        if links.is_dir():
            for link in links.iterdir():
                if link.is_symlink() and str(link.readlink()).startswith(str(self.root)):
                    link.unlink()

    def _remove_cgroups(self) -> None:
        """The kubelet's kubepods cgroups (cgroupfs driver), empty once its pods are gone."""
        for top in set(Path("/sys/fs/cgroup").glob("*/kubepods")) - self.cgroups_before:
            for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    Path(folder).rmdir()

    def _cni_leftovers(self) -> None:
        """The bridge plugin's masquerade rules of any pod whose sandbox was not torn down
        (the kubelet had no time to): they name this network, "privpoll"."""
        saved = subprocess.run(
            ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        mark = 'name: \\"privpoll\\"'
        chains = set()
        for line in saved:
            if line.startswith("-A CNI-") and mark in line:
                chains.add(line.split()[1])
            if line.startswith("-A POSTROUTING") and mark in line and " -j CNI-" in line:
                chains.add(line.rsplit(" -j ", 1)[1])
                rule = shlex.split(line)[2:]
                subprocess.run(["iptables", "-w", "-t", "nat", "-D", "POSTROUTING", *rule],
                               capture_output=True, check=False)  # fmt: skip
        for chain in chains:
            for step in ("-F", "-X"):
                subprocess.run(["iptables", "-w", "-t", "nat", step, chain], capture_output=True)

    def _unmount(self) -> None:
        """Volumes the kubelet mounted and rootfs mounts left below the test's folder."""
        prefix = str(self.root.resolve()) + "/"
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


@contextlib.contextmanager
def running(root: Path, archives: list[Path]) -> Iterator[Cluster]:
    cluster = Cluster(root, archives)
    try:
        yield cluster
    finally:
        cluster.stop()


__all__ = ["ROOT", "Cluster", "Refused", "running"]
