// Package check renders shoal's Helm chart with Helm's own engine, for
// its default values and for every option values.yaml documents, and
// decodes every object it renders strictly into the Kubernetes API types
// (and the Prometheus Operator's, for the ServiceMonitor): a field that
// is misspelt or misplaced fails here, not on a cluster. It also keeps
// deploy/manifests/shoal.yaml, the chart rendered with its defaults for
// users without Helm, in step with the chart (go test -update rewrites it).
package check

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite deploy/manifests/shoal.yaml from the chart")

const (
	chartDir  = "../shoal"
	manifests = "../../manifests/shoal.yaml"
	namespace = "shoal-system"
)

// render renders the chart as release "shoal" in namespace with vals over
// its defaults, and returns the objects' documents by template name.
func render(t *testing.T, vals map[string]any) map[string]string {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := util.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: "shoal", Namespace: namespace, IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(chrt, rv)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	for name, text := range out {
		if strings.HasSuffix(name, ".yaml") && strings.TrimSpace(text) != "" {
			docs[name] = text
		}
	}
	return docs
}

// objects decodes every rendered document strictly into its API type.
type objects struct {
	daemonSet      *appsv1.DaemonSet
	service        *corev1.Service
	serviceMonitor *monitoringv1.ServiceMonitor
	runtimeClass   *nodev1.RuntimeClass
}

func decode(t *testing.T, docs map[string]string) objects {
	t.Helper()
	var o objects
	for name, text := range docs {
		for doc := range strings.SplitSeq(text, "\n---") {
			if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
				continue
			}
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var into any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 DaemonSet":
				o.daemonSet = &appsv1.DaemonSet{}
				into = o.daemonSet
			case "v1 Service":
				o.service = &corev1.Service{}
				into = o.service
			case "node.k8s.io/v1 RuntimeClass":
				o.runtimeClass = &nodev1.RuntimeClass{}
				into = o.runtimeClass
			case "monitoring.coreos.com/v1 ServiceMonitor":
				o.serviceMonitor = &monitoringv1.ServiceMonitor{}
				into = o.serviceMonitor
			default:
				t.Fatalf("%s: an object of a kind this check does not know: %s %s", name, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
				t.Errorf("%s (%s) does not decode strictly: %v", name, meta.Kind, err)
			}
		}
	}
	if o.daemonSet == nil || o.service == nil {
		t.Fatalf("no DaemonSet or Service rendered: %v", keys(docs))
	}
	return o
}

func keys(m map[string]string) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	sort.Strings(k)
	return k
}

func container(t *testing.T, ds *appsv1.DaemonSet, name string) corev1.Container {
	t.Helper()
	for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func TestDefaults(t *testing.T) {
	o := decode(t, render(t, nil))
	ds := o.daemonSet
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("host network %v, DNS policy %s", spec.HostNetwork, spec.DNSPolicy)
	}
	shoal := container(t, ds, "shoal")
	for _, want := range []string{
		"daemon", "--registry-listen=127.0.0.1:5050", "--metrics-listen=$(NODE_IP):5052", "--no-mdns",
		"--peer=/dns4/shoal.shoal-system.svc.cluster.local/tcp/4051", "--log-format=json",
	} {
		if !slices.Contains(shoal.Args, want) {
			t.Errorf("shoal's args lack %q: %v", want, shoal.Args)
		}
	}
	if p := shoal.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe %+v", p)
	}
	if p := shoal.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe %+v", p)
	}
	if shoal.SecurityContext == nil || shoal.SecurityContext.Privileged == nil || !*shoal.SecurityContext.Privileged {
		t.Error("shoal is not privileged: FUSE and mounts need it")
	}
	if shoal.Lifecycle == nil || shoal.Lifecycle.PreStop == nil || !slices.Contains(shoal.Lifecycle.PreStop.Exec.Command, "--remove") {
		t.Error("no preStop hook removing the hosts.toml files")
	}
	prepare := container(t, ds, "prepare")
	if !slices.Contains(prepare.Args, "127.0.0.1:5050=http://127.0.0.1:5050") {
		t.Errorf("prepare writes no hosts.toml for the node's registry: %v", prepare.Args)
	}
	for _, args := range [][]string{prepare.Args, shoal.Lifecycle.PreStop.Exec.Command} {
		script := strings.Join(args, " ")
		if !strings.Contains(script, "--runtime shoal --drop-in /host/conf.d/shoal.toml --containerd-config /host/containerd-config/config.toml") {
			t.Errorf("the runtime drop-in is not written and removed: %v", args)
		}
	}
	if rc := o.runtimeClass; rc == nil || rc.Name != "shoal" || rc.Handler != "shoal" || rc.Scheduling != nil {
		t.Errorf("RuntimeClass %+v", rc)
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	if hostPaths["conf-d"] != "/etc/containerd/conf.d" || hostPaths["containerd-config"] != "/etc/containerd" {
		t.Errorf("host paths %v", hostPaths)
	}
	if o.service.Spec.ClusterIP != corev1.ClusterIPNone || !o.service.Spec.PublishNotReadyAddresses || o.service.Name != "shoal" {
		t.Errorf("the Service is not headless, or publishes only ready nodes: %+v", o.service.Spec)
	}
	if o.serviceMonitor != nil {
		t.Error("a ServiceMonitor by default")
	}
}

// Every option values.yaml documents, set at once.
func TestEveryOption(t *testing.T) {
	vals := map[string]any{
		"image":        map[string]any{"repository": "registry.example/shoal", "tag": "v1", "pullPolicy": "Always"},
		"home":         "/srv/shoal",
		"swarmPort":    4101,
		"registryPort": 5100,
		"metricsPort":  5102,
		"mirror":       map[string]any{"registries": []any{"docker.io", "10.0.0.5:5000=http://10.0.0.5:5000"}, "tagTTL": "5m", "cacheSize": "20GiB"},
		"containerd": map[string]any{"configureHosts": true, "certsDir": "/etc/containerd/certs.d", "runtimeClass": map[string]any{
			"enabled": true, "name": "lazy", "dropIn": "/etc/k3s/containerd/imports/shoal.toml", "configFile": "/etc/k3s/containerd/config.toml"}},
		"peers":             map[string]any{"viaService": false, "extra": []any{"/ip4/10.0.0.2/tcp/4101/p2p/12D3KooWEhB5ekoFQLR3LstDbhDFiwPrVCW9fTXuVkzbFKNvREDx"}},
		"mdns":              true,
		"swarmKeySecret":    "shoal-swarm-key",
		"group":             map[string]any{"name": "fleet", "keySecret": "shoal-group-key"},
		"extraArgs":         []any{"--mirror-whole-only"},
		"logFormat":         "text",
		"logLevel":          "debug",
		"resources":         map[string]any{"limits": map[string]any{"memory": "4Gi"}},
		"tolerations":       []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}},
		"nodeSelector":      map[string]any{"kubernetes.io/os": "linux"},
		"affinity":          map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "shoal", "operator": "In", "values": []any{"on"}}}}}}}},
		"priorityClassName": "",
		"podAnnotations":    map[string]any{"example.com/a": "b"},
		"podLabels":         map[string]any{"team": "platform"},
		"serviceMonitor":    map[string]any{"enabled": true, "interval": "15s", "labels": map[string]any{"release": "prometheus"}},
	}
	o := decode(t, render(t, vals))
	shoal := container(t, o.daemonSet, "shoal")
	for _, want := range []string{
		"--mirror=docker.io", "--mirror=10.0.0.5:5000=http://10.0.0.5:5000", "--mirror-tag-ttl=5m", "--mirror-cache-size=20GiB",
		"--group=fleet", "--mirror-whole-only", "--registry-listen=127.0.0.1:5100", "--listen=/ip4/0.0.0.0/tcp/4101",
		"--peer=/ip4/10.0.0.2/tcp/4101/p2p/12D3KooWEhB5ekoFQLR3LstDbhDFiwPrVCW9fTXuVkzbFKNvREDx", "--log-level=debug",
	} {
		if !slices.Contains(shoal.Args, want) {
			t.Errorf("shoal's args lack %q: %v", want, shoal.Args)
		}
	}
	for _, bad := range []string{"--no-mdns", "--peer=/dns4/shoal.shoal-system.svc.cluster.local/tcp/4101"} {
		if slices.Contains(shoal.Args, bad) {
			t.Errorf("shoal's args have %q", bad)
		}
	}
	if shoal.Image != "registry.example/shoal:v1" {
		t.Errorf("image %s", shoal.Image)
	}
	prepare := container(t, o.daemonSet, "prepare")
	script := strings.Join(prepare.Args, "\n")
	for _, want := range []string{"swarm.key", "group.key", "--mirror\ndocker.io"} {
		if !strings.Contains(script, want) {
			t.Errorf("prepare lacks %q:\n%s", want, script)
		}
	}
	if rc := o.runtimeClass; rc == nil || rc.Handler != "lazy" || rc.Scheduling == nil || rc.Scheduling.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("RuntimeClass %+v: not the handler asked for, or not on shoal's nodes only", rc)
	}
	for _, want := range []string{"--runtime\nlazy", "--drop-in\n/host/conf.d/shoal.toml"} {
		if !strings.Contains(script, want) {
			t.Errorf("prepare lacks %q:\n%s", want, script)
		}
	}
	if o.serviceMonitor == nil || o.serviceMonitor.Spec.Endpoints[0].Port != "metrics" || o.serviceMonitor.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor %+v", o.serviceMonitor)
	}
}

// The rendered manifests in the repository are the chart's defaults.
func TestManifestsAreTheChartRendered(t *testing.T) {
	docs := render(t, nil)
	var b bytes.Buffer
	b.WriteString("# shoal on every node, for clusters without Helm: deploy/helm/shoal rendered\n")
	b.WriteString("# with its default values as release \"shoal\" in namespace " + namespace + ".\n")
	b.WriteString("# Regenerate: cd deploy/helm/check && go test -run TestManifests -update\n")
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", namespace)
	for _, name := range keys(docs) {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", filepath.ToSlash(name), strings.TrimSpace(docs[name]))
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(manifests), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(manifests, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(manifests)
	if err != nil || !bytes.Equal(have, b.Bytes()) {
		t.Fatalf("%s is not the chart rendered with its defaults (%v): cd deploy/helm/check && go test -run TestManifests -update", manifests, err)
	}
}

// With the hosts files and the runtime class both off, the chart leaves
// containerd's files alone: no init step writing them, no preStop hook,
// no host paths of containerd's.
func TestContainerdLeftAlone(t *testing.T) {
	o := decode(t, render(t, map[string]any{"containerd": map[string]any{"configureHosts": false, "runtimeClass": map[string]any{"enabled": false}}}))
	if o.runtimeClass != nil {
		t.Error("a RuntimeClass rendered")
	}
	spec := o.daemonSet.Spec.Template.Spec
	if shoal := container(t, o.daemonSet, "shoal"); shoal.Lifecycle != nil {
		t.Errorf("a preStop hook: %+v", shoal.Lifecycle)
	}
	if prepare := container(t, o.daemonSet, "prepare"); strings.Contains(strings.Join(prepare.Args, " "), "containerd config") {
		t.Errorf("prepare changes containerd's config: %v", prepare.Args)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil && strings.HasPrefix(v.HostPath.Path, "/etc/containerd") {
			t.Errorf("a host path of containerd's: %s", v.HostPath.Path)
		}
	}
}
