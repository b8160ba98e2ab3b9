package sticky

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/store/valkey"
)

// exportedMetrics returns every metric name our collectors describe, with
// its variable label names.
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		tableMetrics.Describe(ch)
		for _, c := range selection.Collectors() {
			c.Describe(ch)
		}
		for _, c := range valkey.Collectors() {
			c.Describe(ch)
		}
		close(ch)
	}()
	name := regexp.MustCompile(`fqName: "([^"]+)"`)
	labels := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	out := map[string][]string{}
	for d := range ch {
		s := d.String()
		m := name.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("cannot read a descriptor: %s", s)
		}
		var ls []string
		if l := labels.FindStringSubmatch(s); l != nil && l[1] != "" {
			ls = strings.Split(l[1], ",")
		}
		out[m[1]] = ls
	}
	return out
}

// TestDashboardMetricsExist: every metric the Grafana dashboard queries is
// one we export, and every label it filters on is one the metric has.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("examples/grafana/caddy-sticky.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	have := exportedMetrics(t)
	metric := regexp.MustCompile(`\b(caddy_sticky_[a-z_]+)(\{[^}]*\})?`)
	matcher := regexp.MustCompile(`([a-z_]+)\s*(=~|!~|!=|=)`)
	queried := map[string]bool{}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			found := metric.FindAllStringSubmatch(tg.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: %q names no caddy_sticky metric", p.Title, tg.Expr)
			}
			for _, m := range found {
				name := m[1]
				base := name
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && have[b] != nil {
						base = b
					}
				}
				queried[base] = true
				ls, ok := have[base]
				if !ok {
					t.Errorf("panel %q queries %s, which nothing exports", p.Title, name)
					continue
				}
				for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
					if !contains(ls, lm[1]) {
						t.Errorf("panel %q filters %s on label %q; it has %v", p.Title, base, lm[1], ls)
					}
				}
			}
		}
	}
	if exprs < 10 {
		t.Fatalf("only %d queries in the dashboard", exprs)
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"caddy_sticky_cookie_lookups_total", "caddy_sticky_table_lookups_total", "caddy_sticky_table_matches_total",
		"caddy_sticky_table_entries", "caddy_sticky_table_size", "caddy_sticky_table_evictions_total",
		"caddy_sticky_server_stuck", "caddy_sticky_peers_lag_seconds", "caddy_sticky_store_call_duration_seconds"} {
		if !queried[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
	var names []string
	for n := range queried {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("dashboard queries %d metrics: %s", len(names), strings.Join(names, " "))
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
