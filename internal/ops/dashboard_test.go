package ops_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/berthproject/berth/internal/metrics"
)

// dashboardFile is the Grafana dashboard shipped in deploy/.
const dashboardFile = "../../deploy/grafana/berth.json"

// exprs returns every PromQL expression of a Grafana dashboard: the
// panels' targets (rows' nested panels too) and the query variables.
func exprs(t *testing.T, raw []byte) []string {
	t.Helper()
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []string
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p struct {
				Panels  []json.RawMessage `json:"panels"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			}
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: a panel: %v", dashboardFile, err)
			}
			for _, tg := range p.Targets {
				out = append(out, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("%s: variable query %s: %v", dashboardFile, v.Query, err)
			}
			q.Query = s
		}
		out = append(out, q.Query)
	}
	return out
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promClauses  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	labelValues  = regexp.MustCompile(`label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)`)
	promNumbers  = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
)

// metricNames returns the metric names a PromQL expression (or a Grafana
// label_values query) reads.
func metricNames(expr string) []string {
	e := labelValues.ReplaceAllString(expr, "$1")
	e = promStrings.ReplaceAllString(e, "")
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promClauses.ReplaceAllString(e, " ")
	e = promNumbers.ReplaceAllString(e, " ")
	var out []string
	for _, m := range promIdent.FindAllStringSubmatch(e, -1) {
		name := strings.TrimSpace(m[0])
		if m[1] != "" || slices.Contains(promKeywords, strings.ToLower(name)) {
			continue // a function or an aggregation, or a keyword
		}
		out = append(out, name)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sum by (code) (rate(berth_assign_total{code!="OK",label=~"a|b"}[$__rate_interval]))`, []string{"berth_assign_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{grpc_method="Assign"}[5m])))`, []string{"grpc_server_handling_seconds_bucket"}},
		{`berth_queue_bytes / 1e6 > bool 3 and on (instance) up`, []string{"berth_queue_bytes", "up"}},
		{`label_values(berth_executor_streams, group)`, []string{"berth_executor_streams"}},
	}
	for _, tt := range tests {
		if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q) = %q; want %q", tt.expr, got, tt.want)
		}
	}
}

// TestDashboardNamesRegisteredMetrics checks the Grafana dashboard against
// the metrics a process registers (metrics.New, the registry every berth
// server's operations listener serves): every expression reads only
// registered metrics (histograms through _bucket, _sum and _count), and
// every berth_ metric has a panel.
func TestDashboardNamesRegisteredMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, n := range metrics.New().Names() {
		registered[n] = true
	}
	known := func(name string) bool {
		if registered[name] {
			return true
		}
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok && registered[base] {
				return true
			}
		}
		return false
	}
	used := map[string]bool{}
	all := exprs(t, raw)
	if len(all) < 20 {
		t.Fatalf("%s has %d expressions; want the whole dashboard", dashboardFile, len(all))
	}
	for _, e := range all {
		names := metricNames(e)
		if len(names) == 0 {
			t.Errorf("expression %q reads no metric", e)
		}
		for _, n := range names {
			if !known(n) {
				t.Errorf("expression %q reads %s, which no berth process registers", e, n)
			}
			used[n] = true
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suf); ok {
					used[base] = true
				}
			}
		}
	}
	for n := range registered {
		if strings.HasPrefix(n, metrics.Namespace+"_") && !used[n] {
			t.Errorf("%s is registered but no panel shows it", n)
		}
	}
}
