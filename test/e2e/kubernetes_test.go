//go:build cluster

package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ipfs/shoal/internal/testbed"
	"github.com/shoal-ipfs/shoal/internal/testenv"
	"github.com/shoal-ipfs/shoal/internal/testproc"
)

// TestKubernetes brings up a real single-node Kubernetes on this machine,
// every part built from the Go module proxy (scripts/build-kubernetes.sh):
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
// kubelet, with containerd 2.x as its CRI runtime and CoreDNS as the
// cluster's DNS. It loads shoal's image (make image) into containerd,
// installs the chart with Helm and shows: the DaemonSet becomes ready by
// its probes; a pod whose image is a CID runs; the node finds another shoal
// node by the chart's Service name, as nodes of a cluster find each other,
// and a pod runs an image only that one holds; a pod naming an image of a
// local registry runs through shoal's mirror; after containerd's restart
// (which reads the chart's runtime drop-in), a pod of the chart's
// RuntimeClass runs on shoal's snapshotter, its image mounted lazily;
// after helm uninstall, containerd pulls on its own again and shoal's
// files are gone.
//
// The node has no pod network (no CNI plugin), so the pods here use the
// host's network, as shoal's own pods do, and tolerate the node's
// not-ready taint.
//
// Run it with make cluster-test; it is not part of make test, whose run
// would more than double with the Kubernetes build on a fresh machine.
func TestKubernetes(t *testing.T) {
	testenv.Root(t)
	k8s := cached(t, "SHOAL_K8S", "kubernetes-v1.37.2", "kube-apiserver", "Kubernetes (scripts/build-kubernetes.sh)")
	imageTar, err := filepath.Abs(envOr("SHOAL_IMAGE_TAR", "../../bin/image.tar"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(imageTar)
	testenv.Need(t, "shoal's image, bin/image.tar (make image)", err)

	up := startDistribution(t)
	runTool(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+helloImage(t)+":v1", "docker://"+up+"/library/hello:v1")

	c := startCluster(t, k8s)
	c.importImage(t, imageTar, "localhost/shoal")

	// A shoal node outside the DaemonSet, which the chart's node finds as
	// it finds the nodes of a cluster, by the headless Service's name in
	// the cluster's DNS: a single-node cluster has no other. Its address
	// is in the Service through an EndpointSlice of its own.
	outside := startShoalDaemonOn(t, outsideHost(t))
	c.kubectl(t, "create", "namespace", "shoal-system")
	c.apply(t, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: shoal-outside
  namespace: shoal-system
  labels: {kubernetes.io/service-name: shoal, endpointslice.kubernetes.io/managed-by: shoal-e2e}
addressType: IPv4
ports: [{name: swarm, port: 4051, protocol: TCP}]
endpoints: [{addresses: [`+clusterPeerIP+`]}]
`)

	home := filepath.Join(c.dir, "shoal-home")
	c.helm(t, "install", "shoal", "../../deploy/helm/shoal", "--namespace", "shoal-system", "--create-namespace",
		"--set", "home="+home,
		"--set", "containerd.certsDir="+c.certs,
		"--set", "containerd.runtimeClass.dropIn="+c.dropIn,
		"--set", "containerd.runtimeClass.configFile="+c.ctrd.config,
		"--set", "mirror.registries={"+up+"=http://"+up+"}")
	c.kubectl(t, "-n", "shoal-system", "rollout", "status", "daemonset/shoal", "--timeout=3m")
	t.Log("the DaemonSet is ready by its probes")
	if _, err := os.Stat(filepath.Join(c.certs, up, "hosts.toml")); err != nil {
		t.Fatalf("the chart's init step wrote no hosts.toml for %s: %v", up, err)
	}
	if dropIn, err := os.ReadFile(c.dropIn); err != nil || !strings.Contains(string(dropIn), `snapshotter = "shoal"`) {
		t.Fatalf("the chart's init step wrote no runtime drop-in: %v\n%s", err, dropIn)
	}

	// A pod whose image is a CID: pushed to the node's shoal through its
	// socket in the home the DaemonSet keeps on the host.
	shoal := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(shoalBinary(t), args...)
		cmd.Env = append(os.Environ(), "SHOAL_HOME="+home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("shoal %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	root := lastLine(shoal("push", "oci:"+helloImage(t)+":v1"))
	c.runPod(t, "by-cid", "127.0.0.1:5050/ipfs/"+root, "", helloGreeting)

	// Found through the Service's name: the node connects to the outside
	// one, and a pod runs an image that only the outside node holds.
	var outsideID struct{ ID string }
	if err := json.Unmarshal([]byte(outside.run(t, "id", "--json")), &outsideID); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, time.Minute, "the node to find the outside one through the Service's name", func() bool {
		return strings.Contains(httpGet(t, "http://"+clusterNodeIP+":5052/status.json"), outsideID.ID)
	})
	t.Logf("the node found %s through the Service's name in the cluster's DNS", outsideID.ID)
	const peerGreeting = "hello from the node found through the Service"
	peerRoot := lastLine(outside.run(t, "push", "oci:"+greetingImage(t, peerGreeting)+":v1"))
	c.runPod(t, "from-peer", "127.0.0.1:5050/ipfs/"+peerRoot, "", peerGreeting)

	// A pod naming the upstream registry's image, pulled through the mirror.
	c.runPod(t, "through-mirror", up+"/library/hello:v1", "", helloGreeting)
	metrics := httpGet(t, "http://"+clusterNodeIP+":5052/metrics")
	served := regexp.MustCompile(`shoal_mirror_served_bytes_total\{from="[a-z-]+",registry="` + regexp.QuoteMeta(up) + `"\} ([0-9.e+]+)`)
	var total float64
	for _, m := range served.FindAllStringSubmatch(metrics, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		total += v
	}
	if total == 0 {
		t.Fatalf("the mirror served nothing of %s:\n%s", up, grepLines(metrics, "shoal_mirror"))
	}
	t.Logf("the mirror served %.0f bytes of %s's image", total, up)

	// The runtime class: containerd reads the drop-in when it restarts, as
	// an operator restarts it once (systemctl restart containerd); the
	// kubelet pulls the pod's image for its runtime handler, whose
	// snapshotter is shoal's, and shoal mounts the layer lazily.
	c.ctrd.restart(t)
	c.logs["containerd"] = c.ctrd.logs
	const lazyGreeting = "hello from a layer shoal mounted lazily"
	lazyRoot := lastLine(shoal("push", "oci:"+greetingImage(t, lazyGreeting)+":v1"))
	c.runPod(t, "lazy", "127.0.0.1:5050/ipfs/"+lazyRoot, "shoal", lazyGreeting)
	if lazySnapshots(t, c.ctrd.ctrK8s) == 0 {
		t.Fatalf("the pod of runtime class shoal ran on no lazily mounted layer:\n%s", c.ctrd.ctrK8s(t, "snapshots", "--snapshotter", "shoal", "ls"))
	}
	t.Log("the pod of runtime class shoal ran on a layer shoal mounted lazily")
	c.kubectl(t, "delete", "pod", "lazy", "--wait", "--timeout=2m")

	// helm uninstall: shoal's hosts.toml files go with its pods, and
	// containerd pulls straight from the registry.
	c.helm(t, "uninstall", "shoal", "--namespace", "shoal-system", "--wait", "--timeout", "3m")
	c.kubectl(t, "-n", "shoal-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=shoal", "--timeout=2m")
	for _, left := range []string{filepath.Join(c.certs, up, "hosts.toml"), c.dropIn} {
		if _, err := os.Stat(left); err == nil {
			t.Fatalf("%s is still there after helm uninstall", left)
		}
	}
	runTool(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+programImage(t, filepath.Join(k8s, "pause"))+":v1", "docker://"+up+"/library/after:v1")
	c.runPod(t, "after-uninstall", up+"/library/after:v1", "", "")
}

// cluster is a single-node Kubernetes the test runs.
type cluster struct {
	bin        string // the built binaries
	dir        string
	kubeconfig string
	certs      string // containerd's hosts directory (config_path)
	dropIn     string // the runtime drop-in, which containerd's config imports
	ctrd       *Containerd
	logs       map[string]*testproc.Logs
}

const clusterToken = "shoal-e2e-admin"

// clusterNodeIP is the node's address, which the test adds to the
// loopback interface: the kubelet refuses an address of 127.0.0.0/8, and
// the test reaches nothing but its own machine. The cluster's DNS serves
// there too. clusterPeerIP is a machine's outside the cluster, a network
// namespace the test makes, joined to the node by a veth pair.
const (
	clusterNodeIP = "10.244.77.1"
	clusterPeerIP = "10.244.78.2"
	outsideNetns  = "shoal-e2e-outside"
)

// outsideHost makes the network namespace of clusterPeerIP, on which a
// shoal node listens at the port the chart's nodes do.
func outsideHost(t *testing.T) testbed.Host {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", outsideNetns).Run() // left by a killed run
	runTool(t, "ip", "netns", "add", outsideNetns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", outsideNetns).Run() })
	runTool(t, "ip", "link", "add", "shoal-e2e-o", "type", "veth", "peer", "name", "eth0", "netns", outsideNetns)
	runTool(t, "ip", "addr", "add", "10.244.78.1/30", "dev", "shoal-e2e-o")
	runTool(t, "ip", "link", "set", "shoal-e2e-o", "up")
	for _, args := range [][]string{
		{"addr", "add", clusterPeerIP + "/30", "dev", "eth0"}, {"link", "set", "eth0", "up"}, {"link", "set", "lo", "up"},
		{"route", "add", clusterNodeIP + "/32", "via", "10.244.78.1"},
	} {
		runTool(t, "ip", append([]string{"-n", outsideNetns}, args...)...)
	}
	return testbed.Host{Name: outsideNetns, Addr: clusterPeerIP}
}

func startCluster(t *testing.T, bin string) *cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "shoal-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// shoal's home propagates its mounts to the host, which needs the host
	// path on a shared mount, as systemd makes every mount of a node; this
	// machine's root is private, so the test's directory is made one.
	runTool(t, "mount", "--bind", dir, dir)
	runTool(t, "mount", "--make-rshared", dir)
	t.Cleanup(func() { _ = exec.Command("umount", "-R", "-l", dir).Run() })
	c := &cluster{bin: bin, dir: dir, certs: filepath.Join(dir, "certs.d"), dropIn: filepath.Join(dir, "conf.d", "shoal.toml"), logs: map[string]*testproc.Logs{}}
	testenv.Tool(t, "ip")
	_ = exec.Command("ip", "addr", "del", clusterNodeIP+"/32", "dev", "lo").Run() // left by a killed run
	runTool(t, "ip", "addr", "add", clusterNodeIP+"/32", "dev", "lo")
	t.Cleanup(func() { _ = exec.Command("ip", "addr", "del", clusterNodeIP+"/32", "dev", "lo").Run() })
	c.start(t, "etcd", func(logs string) bool { return strings.Contains(logs, "etcd ready") },
		"--data-dir", filepath.Join(dir, "etcd"), "--listen-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", "http://127.0.0.1:2380")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(clusterToken+",admin,admin,system:masters\n"))
	apiCerts := filepath.Join(dir, "apiserver")
	c.start(t, "kube-apiserver", func(string) bool { return apiserverReady() },
		"--etcd-servers=http://127.0.0.1:2379", "--bind-address=127.0.0.1", "--advertise-address="+clusterNodeIP, "--secure-port=6443",
		"--cert-dir="+apiCerts, "--token-auth-file="+tokens, "--authorization-mode=AlwaysAllow",
		"--allow-privileged=true", "--kubelet-preferred-address-types=InternalIP", "--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey, "--service-cluster-ip-range=10.96.0.0/24", "--endpoint-reconciler-type=none")

	c.kubeconfig = filepath.Join(dir, "kubeconfig")
	writeFile(t, c.kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: e2e, context: {cluster: e2e, user: admin}}]
current-context: e2e
`, clusterToken)))
	c.start(t, "kube-controller-manager", nil, "--kubeconfig="+c.kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1",
		"--service-account-private-key-file="+saKey, "--root-ca-file="+filepath.Join(apiCerts, "apiserver.crt"))
	c.start(t, "kube-scheduler", nil, "--kubeconfig="+c.kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1")

	// The cluster's DNS, CoreDNS from Services and EndpointSlices, on the
	// node's address; a name outside the cluster is answered NXDOMAIN at
	// once (this machine has no other DNS to ask).
	corefile := filepath.Join(dir, "Corefile")
	writeFile(t, corefile, []byte(fmt.Sprintf(`cluster.local:53 {
  bind %[1]s
  errors
  kubernetes cluster.local {
    kubeconfig %[2]s e2e
  }
}
.:53 {
  bind %[1]s
  template ANY ANY {
    rcode NXDOMAIN
  }
}
`, clusterNodeIP, c.kubeconfig)))
	c.start(t, "coredns", func(logs string) bool { return strings.Contains(logs, "CoreDNS-") }, "-conf", corefile)

	if err := os.MkdirAll(c.certs, 0o755); err != nil {
		t.Fatal(err)
	}
	c.ctrd = startContainerdWith(t, containerd2Dir(t), func(root, state, sock string) string {
		return fmt.Sprintf(`version = 3
root = %q
state = %q
imports = [%q]
[grpc]
  address = %q
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = %q
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = 'localhost/pause:v1'
[plugins.'io.containerd.cri.v1.runtime']
  # Sandboxes ask for an OOM score of -998, which a machine whose own
  # processes may not lower theirs (this one's) refuses; kept at
  # containerd's own instead.
  restrict_oom_score_adj = true
`, root, state, filepath.Join(filepath.Dir(c.dropIn), "*.toml"), sock, c.certs)
	})
	c.logs["containerd"] = c.ctrd.logs
	c.importImage(t, layoutArchive(t, programImage(t, filepath.Join(bin, "pause"))), "localhost/pause")

	kubeletConfig := filepath.Join(dir, "kubelet.yaml")
	writeFile(t, kubeletConfig, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "1Mi", "nodefs.available": "1%%", "imagefs.available": "1%%"}
clusterDNS: [%s]
clusterDomain: cluster.local
# Pulls for a pod's runtime class, which the chart's RuntimeClass needs
# for its images to be pulled lazily (alpha).
featureGates: {RuntimeClassInImageCriApi: true}
`, clusterNodeIP, c.ctrd.Socket, clusterNodeIP)))
	c.start(t, "kubelet", nil, "--config="+kubeletConfig, "--kubeconfig="+c.kubeconfig, "--root-dir="+filepath.Join(dir, "kubelet"),
		"--cert-dir="+filepath.Join(dir, "kubelet-pki"), "--hostname-override=shoal-e2e", "--node-ip="+clusterNodeIP)
	// Registered last, run first: the cluster still answers.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.kubectlCommand("describe", "pods", "--all-namespaces").CombinedOutput()
			t.Logf("pods:\n%s", tail(string(out), 80))
			for _, previous := range []string{"--previous=false", "--previous=true"} {
				out, _ := c.kubectlCommand("-n", "shoal-system", "logs", "-l", "app.kubernetes.io/name=shoal", "--tail=20", previous).CombinedOutput()
				t.Logf("shoal's logs (%s):\n%s", previous, out)
			}
			for name, l := range c.logs {
				if name != "etcd" {
					t.Logf("%s, the end of its logs:\n%s", name, tail(l.String(), 25))
				}
			}
		}
	})
	c.waitFor(t, 2*time.Minute, "the node to register", func() bool {
		return c.kubectlCommand("get", "node", "shoal-e2e").Run() == nil
	})
	c.waitFor(t, 2*time.Minute, "the default service account", func() bool {
		return c.kubectlCommand("get", "serviceaccount", "default").Run() == nil
	})
	return c
}

// start runs one of the cluster's binaries until the test ends; ready, if
// given, says from its logs or otherwise when it serves.
func (c *cluster) start(t *testing.T, name string, ready func(string) bool, args ...string) {
	t.Helper()
	if ready == nil {
		ready = func(string) bool { return true }
	}
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	c.logs[name] = testproc.Start(t, cmd, 2*time.Minute, ready)
}

func apiserverReady() bool {
	req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:6443/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+clusterToken)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (c *cluster) kubectlCommand(args ...string) *exec.Cmd {
	return exec.Command(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
}

func (c *cluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.kubectlCommand(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (c *cluster) helm(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "helm"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(c.dir, "helm-cache"), "HELM_CONFIG_HOME="+filepath.Join(c.dir, "helm-config"), "HELM_DATA_HOME="+filepath.Join(c.dir, "helm-data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
}

// importImage loads an OCI archive into containerd's Kubernetes namespace,
// its tags named under base.
func (c *cluster) importImage(t *testing.T, archive, base string) {
	t.Helper()
	cmd := exec.Command(c.ctrd.ctr, "--address", c.ctrd.Socket, "--namespace", "k8s.io", "images", "import", "--base-name", base, archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ctr images import %s: %v\n%s", archive, err, out)
	}
}

// runPod runs a pod of one container from image on the host's network,
// of runtimeClass if given. With want, the container must exit and print
// it; without, it must become ready.
func (c *cluster) runPod(t *testing.T, name, image, runtimeClass, want string) {
	t.Helper()
	restart := "Never"
	if want == "" {
		restart = "Always"
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default}
spec:
  hostNetwork: true
  restartPolicy: %s
  automountServiceAccountToken: false
  tolerations: [{operator: Exists}]
  containers: [{name: main, image: %q}]
`, name, restart, image)
	if runtimeClass != "" {
		manifest += "  runtimeClassName: " + runtimeClass + "\n"
	}
	c.apply(t, manifest)
	if want == "" {
		c.kubectl(t, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=3m")
		t.Logf("pod %s (%s) runs", name, image)
		return
	}
	c.kubectl(t, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/"+name, "--timeout=3m")
	if logs := c.kubectl(t, "logs", name); !strings.Contains(logs, want) {
		t.Fatalf("pod %s printed %q, want %q", name, logs, want)
	}
	t.Logf("pod %s (%s) ran", name, image)
}

// apply creates or updates the objects of manifest.
func (c *cluster) apply(t *testing.T, manifest string) {
	t.Helper()
	apply := c.kubectlCommand("apply", "-f", "-")
	apply.Stdin = strings.NewReader(manifest)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

func (c *cluster) waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// layoutArchive tars an OCI layout, as ctr images import takes it.
func layoutArchive(t *testing.T, layout string) string {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	runTool(t, "tar", "-C", layout, "-cf", archive, ".")
	return archive
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func grepLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
