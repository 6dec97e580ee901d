package deploy

import (
	"fmt"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/berthproject/berth/internal/node"
)

// shutdownMargin is what a grace period must leave beyond a drain: the
// executor's gRPC stop (1 s), revoking its lease and the process's exit.
const shutdownMargin = 5 * time.Second

// readDoc returns a file's text.
func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// goModVersion returns the version go.mod requires of module mod ("" for
// the go line).
func goModVersion(t *testing.T, mod string) string {
	t.Helper()
	for _, l := range strings.Split(readDoc(t, "../go.mod"), "\n") {
		f := strings.Fields(strings.TrimSpace(l))
		if mod == "" && len(f) == 2 && f[0] == "go" {
			return f[1]
		}
		if mod != "" && len(f) >= 2 && f[0] == mod {
			return f[1]
		}
	}
	t.Fatalf("go.mod names no %q", mod)
	return ""
}

func TestDockerfile(t *testing.T) {
	text := readDoc(t, "Dockerfile")
	type stage struct {
		from  string
		lines []string
	}
	var stages []*stage
	goVersion := ""
	for _, l := range strings.Split(strings.ReplaceAll(text, "\\\n", " "), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		switch strings.ToUpper(f[0]) {
		case "FROM":
			stages = append(stages, &stage{from: f[1]})
			continue
		case "ARG", "ENV":
			if m := regexp.MustCompile(`(?i)(secret|password|token|_key|apikey)`).FindString(l); m != "" {
				t.Errorf("Dockerfile: %q: no secret is built into the image", l)
			}
			if strings.HasPrefix(l, "ARG GO_VERSION=") {
				goVersion = strings.TrimPrefix(l, "ARG GO_VERSION=")
			}
		}
		if len(stages) > 0 {
			s := stages[len(stages)-1]
			s.lines = append(s.lines, l)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a final one", len(stages))
	}
	if want := goModVersion(t, ""); !strings.HasPrefix(want, goVersion) || goVersion == "" {
		t.Errorf("Dockerfile: GO_VERSION %q, want the go line of go.mod (%s)", goVersion, want)
	}
	if !strings.HasPrefix(stages[0].from, "golang:") {
		t.Errorf("Dockerfile: first stage FROM %s, want golang", stages[0].from)
	}
	build := strings.Join(stages[0].lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/berth"} {
		if !strings.Contains(build, want) {
			t.Errorf("Dockerfile: the build stage does not say %s", want)
		}
	}
	final := stages[len(stages)-1]
	if f := final.from; f != "scratch" && !regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:nonroot$`).MatchString(f) {
		t.Errorf("Dockerfile: final stage FROM %s, want distroless static nonroot or scratch", f)
	}
	for _, s := range stages[1:] {
		user := ""
		for _, l := range s.lines {
			if f := strings.Fields(l); strings.EqualFold(f[0], "USER") {
				user = f[1]
			}
			if regexp.MustCompile(`(?i)^(COPY|ADD)\b.*\.(pem|key)\b`).MatchString(l) {
				t.Errorf("Dockerfile: %q: keys and certificates are mounted, not built in", l)
			}
		}
		uid, _, _ := strings.Cut(user, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("Dockerfile: stage FROM %s runs as USER %q, want a numeric non-root user (Kubernetes' runAsNonRoot checks it)", s.from, user)
		}
	}
	if !strings.Contains(readDoc(t, "../Makefile"), "docker build -f deploy/Dockerfile") {
		t.Error("Makefile: no docker target building deploy/Dockerfile")
	}
}

// tlsHosts returns, for each `berth cert server --out NAME`, the hosts its
// certificate is for.
func tlsHosts(invs []*resolved) map[string][]string {
	out := map[string][]string{}
	for _, r := range invs {
		if r.command() == "cert server" {
			out[r.flags["out"]] = strings.Split(r.flags["host"], ",")
		}
	}
	return out
}

// has reports whether list holds s.
func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// flagDuration parses a duration flag, failing the test if it is not one.
func flagDuration(t *testing.T, where, name, v string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Errorf("%s: --%s %q: %v", where, name, v, err)
	}
	return d
}

// TestCommandLines builds berth and checks every command line of the
// compose file, its setup script and the manifests against it: each
// subcommand and flag exists, each flag that takes a value has one, and
// positional arguments go where they are allowed. It then checks what
// those command lines promise: grace periods longer than drains, the
// cluster's shape, names that TLS certificates cover.
func TestCommandLines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the berth binary")
	}
	cli := buildBerth(t, t.TempDir())
	check := func(inv invocation) *resolved {
		t.Helper()
		r, err := cli.resolve(inv)
		if err != nil {
			t.Errorf("%s: %v", inv.where, err)
		}
		return r
	}

	// The checker itself refuses what it is here to catch.
	t.Run("checker", func(t *testing.T) {
		for _, args := range [][]string{
			{"executor", "--grup=group-1"},                            // a typo
			{"executor", "--group"},                                   // no value
			{"executor", "--signing-key=k.pem"},                       // another command's flag
			{"ctl", "--open-enrollment", "groups"},                    // a flag of no command on the path
			{"ctl", "registri", "groups"},                             // an unknown subcommand
			{"keygen", "extra"},                                       // an argument where none is taken
			{"--log-level=debug"},                                     // no subcommand
			{"ctl", "registry", "group", "put", "g", "-x", "default"}, // an unknown short flag
		} {
			if r, err := cli.resolve(invocation{where: "checker", args: args}); err == nil {
				t.Errorf("berth %q: accepted as %q with %v", args, r.command(), r.flags)
			}
		}
		r, err := cli.resolve(invocation{where: "checker", args: []string{"ctl", "registry", "--etcd", "https://e:2379", "group", "put", "g", "--labels", "a,b", "-o", "json"}})
		if err != nil || r.command() != "ctl registry group put" || r.flags["etcd"] != "https://e:2379" || r.flags["output"] != "json" || !has(r.args, "g") {
			t.Errorf("a valid ctl registry command line: %+v, %v", r, err)
		}
	})

	// The setup script: what it runs, and the certificates it makes.
	var script []*resolved
	invs, err := shellInvocations("compose-init.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, inv := range invs {
		if r := check(inv); r != nil {
			script = append(script, r)
		}
	}
	commands := map[string]int{}
	for _, r := range script {
		commands[r.command()]++
	}
	for cmd, n := range map[string]int{"cert ca": 1, "cert server": 3, "cert client": 1, "keygen": 1, "ctl registry group put": 1} {
		if commands[cmd] != n {
			t.Errorf("compose-init.sh: %d berth %s, want %d (found %v)", commands[cmd], cmd, n, commands)
		}
	}
	certs := tlsHosts(script)

	t.Run("docs", func(t *testing.T) {
		invs, err := markdownInvocations("../docs/deploy.md")
		if err != nil {
			t.Fatal(err)
		}
		if len(invs) < 5 {
			t.Fatalf("docs/deploy.md: %d berth command lines in sh blocks, want the certificates, keys and bootstrap it shows", len(invs))
		}
		for _, inv := range invs {
			check(inv)
		}
	})

	t.Run("compose", func(t *testing.T) {
		c := readCompose(t)
		groups := map[string][]string{}
		var controlplanes, simulates []string
		for _, name := range names(c.Services) {
			s := c.Services[name]
			if !s.berthImage() {
				continue
			}
			args, err := s.berthArgs()
			if err != nil {
				t.Errorf("compose.yaml service %s: %v", name, err)
				continue
			}
			where := "compose.yaml service " + name
			r := check(invocation{where: where, args: args})
			if r == nil {
				continue
			}
			switch r.command() {
			case "controlplane":
				controlplanes = append(controlplanes, name)
				if !has(certs["controlplane"], name) {
					t.Errorf("%s: the controlplane certificate is for %v, not %s", where, certs["controlplane"], name)
				}
			case "executor":
				g := r.flags["group"]
				groups[g] = append(groups[g], name)
				host, _, _ := strings.Cut(r.flags["advertise"], ":")
				if host != name {
					t.Errorf("%s: --advertise %q, want the service's name, which the compose network resolves", where, r.flags["advertise"])
				}
				if !has(certs["executor"], host) {
					t.Errorf("%s: the executor certificate is for %v, not %s", where, certs["executor"], host)
				}
				drain, ok := r.flags["drain-timeout"]
				if !ok {
					t.Errorf("%s: set --drain-timeout explicitly", where)
					continue
				}
				d := flagDuration(t, where, "drain-timeout", drain)
				grace := 10 * time.Second // Docker's default
				if s.StopGracePeriod != "" {
					grace = flagDuration(t, where, "stop_grace_period", s.StopGracePeriod)
				}
				if grace < d+shutdownMargin {
					t.Errorf("%s: stop_grace_period %v, want at least --drain-timeout %v + %v", where, grace, d, shutdownMargin)
				}
			case "simulate":
				simulates = append(simulates, name)
				for _, cp := range controlplanes {
					if !strings.Contains(r.flags["controlplane"], cp+":") {
						t.Errorf("%s: --controlplane %q leaves out %s", where, r.flags["controlplane"], cp)
					}
				}
			}
		}
		if len(controlplanes) != 2 {
			t.Errorf("compose.yaml: control planes %v, want 2", controlplanes)
		}
		if len(simulates) != 1 {
			t.Errorf("compose.yaml: simulate services %v, want 1", simulates)
		}
		if len(groups) != 2 {
			t.Errorf("compose.yaml: groups %v, want 2", groups)
		}
		for g, ex := range groups {
			if len(ex) != 2 {
				t.Errorf("compose.yaml: group %s has executors %v, want 2", g, ex)
			}
		}
	})

	t.Run("k8s", func(t *testing.T) {
		found := map[string]int{}
		for _, w := range workloads(decodeManifests(t)) {
			grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
			if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
				grace = *g
			} else {
				t.Errorf("%s: set terminationGracePeriodSeconds explicitly", w)
			}
			for _, c := range w.pod.Spec.Containers {
				if !strings.Contains(path.Base(c.Image), "berth") {
					continue
				}
				where := fmt.Sprintf("%s container %s", w, c.Name)
				args := c.Args
				if len(c.Command) > 0 {
					if path.Base(c.Command[0]) != "berth" {
						t.Errorf("%s: command %q is not berth", where, c.Command)
						continue
					}
					args = append(append([]string{}, c.Command[1:]...), c.Args...)
				}
				r := check(invocation{where: where, args: args})
				if r == nil {
					continue
				}
				found[r.command()]++
				checkMounted(t, where, r, c)
				var preStop time.Duration
				if h := c.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.Sleep != nil {
					preStop = time.Duration(h.PreStop.Sleep.Seconds) * time.Second
				}
				switch r.command() {
				case "executor":
					if _, ok := w.obj.(*appsv1.StatefulSet); !ok {
						t.Errorf("%s: executors run as a StatefulSet, for stable advertised addresses", where)
					}
					checkAdvertise(t, where, r, w)
					drain, ok := r.flags["drain-timeout"]
					if !ok {
						t.Errorf("%s: set --drain-timeout explicitly", where)
						continue
					}
					d := flagDuration(t, where, "drain-timeout", drain)
					if want := preStop + d + shutdownMargin; time.Duration(grace)*time.Second < want {
						t.Errorf("%s: terminationGracePeriodSeconds %d, want at least %v (preStop %v + --drain-timeout %v + %v)", where, grace, want, preStop, d, shutdownMargin)
					}
				case "controlplane":
					stop := node.DefaultReplicaConfig().StopTimeout
					if want := preStop + stop + shutdownMargin; time.Duration(grace)*time.Second < want {
						t.Errorf("%s: terminationGracePeriodSeconds %d, want at least %v (preStop %v + the graceful stop %v + %v)", where, grace, want, preStop, stop, shutdownMargin)
					}
				}
			}
		}
		if found["controlplane"] == 0 || found["executor"] == 0 {
			t.Errorf("manifests run %v, want control planes and executors", found)
		}
	})
}

// checkMounted wants every absolute path a flag names inside one of the
// container's mounts.
func checkMounted(t *testing.T, where string, r *resolved, c corev1.Container) {
	t.Helper()
	for name, v := range r.flags {
		if !strings.HasPrefix(v, "/") {
			continue
		}
		ok := false
		for _, m := range c.VolumeMounts {
			ok = ok || strings.HasPrefix(v, strings.TrimSuffix(m.MountPath, "/")+"/")
		}
		if !ok {
			t.Errorf("%s: --%s %s is in none of the container's mounts", where, name, v)
		}
	}
}

// checkAdvertise wants an executor of a StatefulSet to advertise its pod's
// stable DNS name under the StatefulSet's headless Service.
func checkAdvertise(t *testing.T, where string, r *resolved, w workload) {
	t.Helper()
	s, ok := w.obj.(*appsv1.StatefulSet)
	if !ok {
		return
	}
	want := "$(POD_NAME)." + s.Spec.ServiceName + ".$(POD_NAMESPACE).svc."
	if a := r.flags["advertise"]; !strings.HasPrefix(a, want) || !strings.Contains(a, ":") {
		t.Errorf("%s: --advertise %q, want %s…:PORT, the pod's stable name", where, a, want)
	}
	if r.flags["id"] != "$(POD_NAME)" {
		t.Errorf("%s: --id %q, want $(POD_NAME): one stable id per pod", where, r.flags["id"])
	}
}
