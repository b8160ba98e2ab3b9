package selection

import (
	"net/http"
	"strings"

	"github.com/caddy-sticky/sticky/internal/haproxycookie"
)

// removeRequestCookie drops every cookie called name from the request,
// and the Cookie header itself when nothing else is left. It reports whether
// the request changed.
func removeRequestCookie(r *http.Request, name string) bool {
	return editRequestCookies(r, func(v string) (string, bool) { return haproxycookie.RemoveCookie(v, name) })
}

// rewriteRequestCookie gives the application back the value it set, in
// prefix mode: NAME=server~app becomes NAME=app. It reports whether the
// request changed.
func rewriteRequestCookie(r *http.Request, name string) bool {
	return editRequestCookies(r, func(v string) (string, bool) { return haproxycookie.RewritePrefixedCookie(v, name) })
}

// editRequestCookies applies edit to each Cookie header value of the
// request and drops the values it leaves empty, and the header when none
// remains. The values are rewritten in their own slice, which allocates
// nothing: the request's header is its own (Caddy's reverse_proxy selects
// with a clone of the client's request, whose header Clone copied).
func editRequestCookies(r *http.Request, edit func(string) (string, bool)) bool {
	values := r.Header["Cookie"]
	kept, changed := 0, false
	for _, v := range values {
		if nv, ch := edit(v); ch {
			changed = true
			if strings.TrimSpace(nv) == "" {
				continue
			}
			v = nv
		}
		values[kept] = v
		kept++
	}
	if !changed {
		return false
	}
	if kept == 0 {
		delete(r.Header, "Cookie")
		return true
	}
	clear(values[kept:])
	r.Header["Cookie"] = values[:kept]
	return true
}

// setCookieName returns the name of the cookie a Set-Cookie line sets.
func setCookieName(line string) string {
	eq := strings.IndexByte(line, '=')
	if eq < 0 {
		return ""
	}
	return strings.TrimSpace(line[:eq])
}

func hasSetCookie(h http.Header, name string) bool {
	for _, line := range h["Set-Cookie"] {
		if setCookieName(line) == name {
			return true
		}
	}
	return false
}

// removeSetCookie removes the application's own cookie of our name, which
// insert mode replaces.
func removeSetCookie(h http.Header, name string) {
	lines := h["Set-Cookie"]
	kept := lines[:0:0]
	removed := false
	for _, line := range lines {
		if setCookieName(line) == name {
			removed = true
			continue
		}
		kept = append(kept, line)
	}
	if !removed {
		return
	}
	if len(kept) == 0 {
		delete(h, "Set-Cookie")
		return
	}
	h["Set-Cookie"] = kept
}

// rewriteSetCookie replaces the value of every Set-Cookie of name with
// newValue(old value), keeping its attributes. It reports whether any
// cookie was rewritten.
func rewriteSetCookie(h http.Header, name string, newValue func(string) string) bool {
	lines := h["Set-Cookie"]
	rewritten := false
	for i, line := range lines {
		if setCookieName(line) != name {
			continue
		}
		eq := strings.IndexByte(line, '=')
		rest := line[eq+1:]
		end := strings.IndexByte(rest, ';')
		attrs := ""
		if end >= 0 {
			rest, attrs = rest[:end], rest[end:]
		}
		lines[i] = name + "=" + newValue(strings.TrimSpace(rest)) + attrs
		rewritten = true
	}
	return rewritten
}

// sharedCacheable reports whether a shared cache could store the response
// (RFC 9111 section 3 and 4.2.2, reduced to what a proxy can see): such a
// response must not carry one user's persistence cookie to others.
func sharedCacheable(req *http.Request, res *http.Response) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	explicit := false
	cc := res.Header.Values("Cache-Control")
	for _, line := range cc {
		for d := range strings.SplitSeq(line, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			if i := strings.IndexByte(d, '='); i >= 0 {
				d = strings.TrimSpace(d[:i])
			}
			switch d {
			case "no-store", "private", "no-cache":
				return false
			case "public", "max-age", "s-maxage":
				explicit = true
			}
		}
	}
	if len(cc) == 0 {
		for _, p := range res.Header.Values("Pragma") {
			if strings.Contains(strings.ToLower(p), "no-cache") {
				return false
			}
		}
	}
	if explicit || res.Header.Get("Expires") != "" {
		return true
	}
	switch res.StatusCode {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// validCookieName accepts RFC 6265 token characters.
func validCookieName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// validCookieValue accepts RFC 6265 cookie-octets, which is also what we
// may write back without quoting.
func validCookieValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

func validAttrValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' || c == 0x7f || c == ';' {
			return false
		}
	}
	return true
}
