package main

import (
	"regexp"
	"slices"
	"testing"
)

// TestOnlyMatching checks -only: the matching configurations stay, and a
// proxy's round_robin stays with them (the ratios need it) but not
// without them, so `-only layer4` runs no HTTP load at all.
func TestOnlyMatching(t *testing.T) {
	names := func(scs []scenario) []string {
		var out []string
		for _, sc := range scs {
			out = append(out, sc.proxy+"/"+sc.name)
		}
		return out
	}
	http := slices.Concat(caddyScenarios(), haproxyScenarios())
	l4 := slices.Concat(layer4Scenarios(), haproxyLayer4Scenarios())
	for _, tc := range []struct {
		re       string
		http, l4 []string
	}{
		{re: "layer4", l4: names(l4)},
		{re: "caddy/layer4 stick_table", l4: []string{"caddy/layer4 round_robin", "caddy/layer4 stick_table {client_ip}"}},
		{re: "sticky_cookie", http: []string{"caddy/round_robin", "caddy/sticky_cookie"}},
		{re: "haproxy/cookie", http: []string{"haproxy/round_robin", "haproxy/cookie insert indirect nocache"}},
		{re: "^caddy/round_robin$", http: []string{"caddy/round_robin"}},
		{re: "scale"},
	} {
		re := regexp.MustCompile(tc.re)
		if got := names(onlyMatching(re, http)); !slices.Equal(got, tc.http) {
			t.Errorf("-only %q, HTTP: %q, want %q", tc.re, got, tc.http)
		}
		if got := names(onlyMatching(re, l4)); !slices.Equal(got, tc.l4) {
			t.Errorf("-only %q, layer 4: %q, want %q", tc.re, got, tc.l4)
		}
	}
}
