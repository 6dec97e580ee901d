package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/berthproject/berth/internal/testutil"
)

// chromiumPath is the browser TestFleetPageInChromium drives; .ci/run
// installs it.
const chromiumPath = "/usr/bin/chromium"

// needChromium returns the browser to drive. Without one the test fails
// under CI=true (CI installs it, so its absence is a broken CI) and is
// skipped elsewhere.
func needChromium(t *testing.T) string {
	t.Helper()
	path := chromiumPath
	if p := os.Getenv("BERTH_CHROMIUM"); p != "" {
		path = p
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium is missing at %s under CI=true: .ci/run installs it (apt-get install chromium): %v", path, err)
		}
		t.Skipf("no chromium at %s (apt-get install chromium, or set BERTH_CHROMIUM): %v", path, err)
	}
	return path
}

// fleetAPI reads the fleet API of `berth dev` with a key, trusting the dev
// CA.
type fleetAPI struct {
	t    *testing.T
	base string
	key  string
	hc   *http.Client
}

func (f fleetAPI) get(path string, v any) int {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.base+"/fleet/api/"+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.key)
	resp, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			f.t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

type fleetGroups struct {
	Groups []struct {
		ID          string  `json:"id"`
		Connections int64   `json:"connections"`
		Capacity    int64   `json:"capacity"`
		Utilization float64 `json:"utilization"`
	} `json:"groups"`
}

func (g fleetGroups) connections() int64 {
	var n int64
	for _, x := range g.Groups {
		n += x.Connections
	}
	return n
}

// TestFleetPageInChromium runs `berth dev` and two simulated devices, opens
// the operations listener's /fleet/ in a real headless Chromium and checks
// what an operator sees: a wrong key is refused (401), a service key too
// (403), a viewer key shows every group with its utilization as the API
// has it, the page follows a third device connecting without a reload,
// and a device lookup shows a connected device's executor and placement.
func TestFleetPageInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes and a browser")
	}
	browser := needChromium(t)
	t.Setenv("BERTH_CONTEXT", filepath.Join(t.TempDir(), "context.json"))
	dev := start(t, "dev", "dev", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	line := dev.waitLine(60*time.Second, "ready line", func(s string) bool { return strings.HasPrefix(s, "berth dev ready:") })
	opsURL, ca, cp := opsRE.FindStringSubmatch(line), caRE.FindStringSubmatch(line), cpRE.FindStringSubmatch(line)
	if opsURL == nil || ca == nil || cp == nil {
		t.Fatalf("ready line %q: want ops=, ca= and controlplane=", line)
	}
	newKey := func(role string) string {
		var created struct{ Secret string }
		if err := json.Unmarshal([]byte(ctl(t, cp[1], "apikey", "create", "--name", "fleet "+role, "--role", role, "-o", "json")), &created); err != nil || created.Secret == "" {
			t.Fatalf("apikey create --role %s: %v", role, err)
		}
		return created.Secret
	}
	viewer, service := newKey("viewer"), newKey("service")

	pem, err := os.ReadFile(ca[1])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	defer hc.CloseIdleConnections()
	api := fleetAPI{t: t, base: opsURL[1], key: viewer, hc: hc}

	sim := start(t, "simulate", "simulate", "--controlplane", cp[1], "--ca", ca[1], "--devices", "2", "--every", "1s")
	var groups fleetGroups
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "2 connections in /fleet/api/groups", func() bool {
		return api.get("groups", &groups) == http.StatusOK && groups.connections() == 2
	})
	var device struct {
		Online        bool   `json:"online"`
		Executor      string `json:"executor"`
		AssignedGroup string `json:"assigned_group"`
		Explanation   *struct {
			Label         string `json:"label"`
			RecordedGroup string `json:"recorded_group"`
		} `json:"explanation"`
	}
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "sim-000001 online in /fleet/api/devices", func() bool {
		return api.get("devices/sim-000001", &device) == http.StatusOK && device.Online && device.Executor != ""
	})
	if device.Explanation == nil || device.Explanation.Label == "" || device.Explanation.RecordedGroup != device.AssignedGroup {
		t.Fatalf("sim-000001's explanation = %+v; want its placement", device.Explanation)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// The dev CA is not the browser's; the listener is on loopback.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	// The first Run starts the browser and lives as long as bctx; each
	// step below runs under its own bound.
	if err := chromedp.Do(bctx, chromedp.Navigate(opsURL[1]+"/fleet/"), chromedp.WaitVisible("#key")); err != nil {
		t.Fatalf("open /fleet/: %v", err)
	}
	step := func(what string, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, d)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			page, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage text:\n%s", what, err, page)
		}
	}
	login := func(key string) []chromedp.Action[chromedp.Void] {
		return []chromedp.Action[chromedp.Void]{chromedp.WaitVisible("#key"), chromedp.SendKeys("#key", key), chromedp.Click("#key-submit")}
	}
	refusalShows := func(code string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.getElementById("refusal").textContent.includes(%q) && !document.getElementById("login").hidden`, "Refused ("+code+")"))
	}

	step("a wrong key is refused", 10*time.Second, append(login(strings.Split(viewer, ".")[0]+".wrongsecret"), refusalShows("401"))...)
	step("a service key is refused", 10*time.Second, append(login(service), refusalShows("403"))...)
	step("a viewer key shows the groups", 10*time.Second, append(login(viewer), chromedp.WaitVisible("#groups tbody tr"))...)

	// Every group of the API is a row with its utilization, as the API
	// has it (the page polls: wait for its next refresh to agree).
	api.get("groups", &groups)
	if len(groups.Groups) == 0 {
		t.Fatal("the API shows no groups")
	}
	for _, g := range groups.Groups {
		want := fmt.Sprintf("%.1f%%", g.Utilization*100)
		expr := fmt.Sprintf(`(() => { const r = document.querySelector('#groups tr[data-group=%q]');
			return r !== null && r.querySelector("td.util").textContent.includes(%q) && r.textContent.includes(%q) && r.querySelector(".bar > span") !== null; })()`,
			g.ID, want, fmt.Sprintf("%d / %d", g.Connections, g.Capacity))
		step("group "+g.ID+" at "+want, 10*time.Second, chromedp.Poll[chromedp.Void](expr))
	}
	key, err := chromedp.Run(bctx, chromedp.Evaluate[string](`sessionStorage.getItem("berth.fleet.apikey")`))
	if err != nil || key != viewer {
		t.Errorf("sessionStorage key = %q, %v; want the viewer key kept for the tab", key, err)
	}

	// Live: a third device shows in the page's totals without a reload.
	sim2 := start(t, "simulate2", "simulate", "--controlplane", cp[1], "--ca", ca[1], "--devices", "1", "--id-prefix", "late-", "--every", "1s")
	step("the page follows a third device", 20*time.Second, chromedp.Poll[chromedp.Void](
		`[...document.querySelectorAll("#groups tbody tr[data-group]")].reduce((n, r) => n + Number(r.children[4].textContent.split(" / ")[0]), 0) === 3`))

	// The device lookup shows the executor holding the stream and the
	// placement (the label decided again, and the group recorded: the
	// group decided again may differ, as the fleet changed since).
	step("device lookup", 10*time.Second,
		chromedp.SendKeys("#device-id", "sim-000001"), chromedp.Click("#device-submit"), chromedp.WaitVisible("#device-info"))
	info, err := chromedp.Run(bctx, chromedp.Text("#device-info"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"online", device.Executor, "queued messages", "→ label " + device.Explanation.Label,
		"recorded\n" + device.Explanation.RecordedGroup} {
		if !strings.Contains(info, want) {
			t.Errorf("device lookup shows %q; want it to contain %q", info, want)
		}
	}

	cancelBrowser()
	cancelAlloc()
	for _, p := range []*proc{sim2, sim} {
		p.signal(syscall.SIGINT)
		_ = p.wait(30 * time.Second)
	}
	dev.signal(syscall.SIGTERM)
	if err := dev.wait(60 * time.Second); err != nil {
		t.Errorf("berth dev after SIGTERM: %v", err)
	}
}

// TestFleetPageServers: `berth controlplane --ops-listen` serves the fleet
// page and its API (an API key needed), `berth executor --ops-listen` does
// not serve it.
func TestFleetPageServers(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: starts real processes")
	}
	ep := startEtcd(t) // BERTH_API_KEY: an admin key
	priv, pub := keygen(t)
	cp := start(t, "controlplane", "controlplane", "--etcd", ep, "--signing-key", priv, "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0")
	cpLine := cp.waitLine(30*time.Second, "listening line", listenRE.MatchString)
	ctl(t, listenRE.FindStringSubmatch(cpLine)[1], "group", "put", "group-1", "--capacity", "10")
	ex := start(t, "executor", "executor", "--etcd", ep, "--group", "group-1", "--id", "e1", "--token-public-key", pub, "--ops-listen", "127.0.0.1:0")
	exLine := ex.waitLine(30*time.Second, "listening line", listenRE.MatchString)
	cpOps, exOps := opsRE.FindStringSubmatch(cpLine), opsRE.FindStringSubmatch(exLine)
	if cpOps == nil || exOps == nil {
		t.Fatalf("ready lines %q, %q: want ops=", cpLine, exLine)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	admin := fleetAPI{t: t, base: cpOps[1], key: os.Getenv("BERTH_API_KEY"), hc: hc}
	var groups fleetGroups
	testutil.WaitForEvery(t, 30*time.Second, pollEvery, "group-1 in /fleet/api/groups", func() bool {
		return admin.get("groups", &groups) == http.StatusOK && len(groups.Groups) == 1 && groups.Groups[0].ID == "group-1" && groups.Groups[0].Capacity == 10
	})
	if code := (fleetAPI{t: t, base: cpOps[1], hc: hc}).get("groups", nil); code != http.StatusUnauthorized {
		t.Errorf("control plane /fleet/api/groups without a key = %d; want 401", code)
	}
	for _, tt := range []struct {
		base string
		want int
	}{{cpOps[1], http.StatusOK}, {exOps[1], http.StatusNotFound}} {
		resp, err := hc.Get(tt.base + "/fleet/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s/fleet/ = %d; want %d (control planes serve the page, executors do not)", tt.base, resp.StatusCode, tt.want)
		}
	}
}
