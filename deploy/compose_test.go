package deploy

import (
	"strings"
	"testing"
)

// etcdFlag returns the value of etcd's --name=value flag in args.
func etcdFlag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name {
			return "true", true
		}
	}
	return "", false
}

// TestComposeShape checks the compose file without Docker: a 3-member etcd
// cluster over TLS on the etcd release berth is built with, services held
// to no privilege, and references that resolve.
func TestComposeShape(t *testing.T) {
	c := readCompose(t)
	etcdVersion := goModVersion(t, "go.etcd.io/etcd/client/v3")
	var members []string
	for _, name := range names(c.Services) {
		s := c.Services[name]
		if !strings.HasPrefix(s.Image, "quay.io/coreos/etcd:") {
			continue
		}
		members = append(members, name)
		if want := "quay.io/coreos/etcd:" + etcdVersion; s.Image != want {
			t.Errorf("service %s: image %s, want %s (the etcd release of go.mod)", name, s.Image, want)
		}
		if v, _ := etcdFlag(s.Command, "name"); v != name {
			t.Errorf("service %s: etcd --name %q, want the service's name", name, v)
		}
		for _, f := range []string{"cert-file", "key-file", "trusted-ca-file", "client-cert-auth"} {
			if _, ok := etcdFlag(s.Command, f); !ok {
				t.Errorf("service %s: no --%s: clients reach etcd over TLS with certificates", name, f)
			}
		}
		for _, f := range []string{"listen-client-urls", "advertise-client-urls"} {
			if v, _ := etcdFlag(s.Command, f); !strings.HasPrefix(v, "https://") {
				t.Errorf("service %s: --%s %q, want https://", name, f, v)
			}
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("service %s: no healthcheck (the groups job waits on it)", name)
		}
	}
	if len(members) != 3 {
		t.Fatalf("etcd members %v, want 3", members)
	}
	for _, m := range members {
		cluster, _ := etcdFlag(c.Services[m].Command, "initial-cluster")
		for _, other := range members {
			if !strings.Contains(cluster, other+"=https://"+other+":2380") {
				t.Errorf("service %s: --initial-cluster %q leaves out %s", m, cluster, other)
			}
		}
	}

	initJobs := 0
	for _, name := range names(c.Services) {
		s := c.Services[name]
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s: depends on %s, which is no service", name, dep)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if _, ok := c.Volumes[src]; !ok && !strings.HasPrefix(src, "./") {
				t.Errorf("service %s: volume %s is not declared", name, src)
			}
		}
		if s.User == "0" || strings.HasPrefix(s.User, "0:") || s.User == "root" {
			t.Errorf("service %s: user %q", name, s.User)
		}
		if len(s.CapDrop) == 0 || s.CapDrop[0] != "ALL" {
			t.Errorf("service %s: cap_drop %v, want [ALL]", name, s.CapDrop)
		}
		if strings.HasPrefix(s.Image, "quay.io/coreos/etcd:") {
			continue
		}
		if !s.ReadOnly {
			t.Errorf("service %s: want read_only: true", name)
		}
		if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" {
			t.Errorf("service %s: want it built from deploy/Dockerfile", name)
		}
		if strings.HasPrefix(s.Image, "berth-init:") {
			initJobs++
			if s.Build == nil || s.Build.Target != "init" || len(s.Command) != 2 || s.Command[0] != "/compose-init.sh" {
				t.Errorf("service %s: want the init target running /compose-init.sh PHASE, got %q", name, s.Command)
			}
			continue
		}
		if !s.berthImage() {
			t.Errorf("service %s: image %s is neither berth's nor etcd's", name, s.Image)
		}
		if s.Build != nil && s.Build.Target != "" {
			t.Errorf("service %s: berth services run the Dockerfile's default target, not %s", name, s.Build.Target)
		}
	}
	if initJobs != 2 {
		t.Errorf("%d init jobs, want pki and groups", initJobs)
	}
}
