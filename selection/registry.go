package selection

import "sort"

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

// CookieRoutes returns, for every policy whose cookie is named cookie (all
// policies when cookie is empty), the value that routes to server, a dial
// address such as 10.0.0.11:8080. Duplicates are folded.
func CookieRoutes(policies []*StickyCookie, server, cookie string) []CookieRoute {
	seen := map[CookieRoute]bool{}
	var out []CookieRoute
	for _, s := range policies {
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
