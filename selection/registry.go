package selection

import (
	"sort"
	"sync"
)

// cookiePolicies lists the provisioned sticky_cookie policies, for the admin
// API's cookie lookup; it is read at request time and never through a config.
var cookiePolicies = struct {
	sync.RWMutex
	m map[*StickyCookie]struct{}
}{m: map[*StickyCookie]struct{}{}}

func registerCookiePolicy(s *StickyCookie) {
	cookiePolicies.Lock()
	cookiePolicies.m[s] = struct{}{}
	cookiePolicies.Unlock()
}

func unregisterCookiePolicy(s *StickyCookie) {
	cookiePolicies.Lock()
	delete(cookiePolicies.m, s)
	cookiePolicies.Unlock()
}

// CookieRoute is a cookie that sends a request to a server.
type CookieRoute struct {
	// Cookie is the cookie's name.
	Cookie string `json:"cookie"`
	// Value is the value that routes to the server (for dated cookies, the
	// server part; the dates are added as HAProxy does).
	Value string `json:"value"`
	// Mode is the policy's mode (insert, rewrite, prefix).
	Mode string `json:"mode"`
}

// CookieRoutes returns, for every running sticky_cookie policy whose cookie
// is named cookie (all policies when cookie is empty), the value that routes
// to server, a dial address such as 10.0.0.11:8080. Policies of a config that
// is being replaced may appear until it stops; duplicates are folded.
func CookieRoutes(server, cookie string) []CookieRoute {
	cookiePolicies.RLock()
	defer cookiePolicies.RUnlock()
	seen := map[CookieRoute]bool{}
	var out []CookieRoute
	for s := range cookiePolicies.m {
		if cookie != "" && s.Name != cookie {
			continue
		}
		r := CookieRoute{Cookie: s.Name, Value: s.valueFor(normalizeDial(server)), Mode: s.Mode}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cookie != out[j].Cookie {
			return out[i].Cookie < out[j].Cookie
		}
		return out[i].Value < out[j].Value
	})
	return out
}
