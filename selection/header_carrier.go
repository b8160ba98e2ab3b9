package selection

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/caddy-sticky/sticky/internal/haproxycookie"
)

// The header carrier of sticky_cookie (`header <name>`): the persistence
// value travels in a request/response header instead of a cookie, for
// clients that keep no cookies. Values, dates and outcomes are the cookie's.

// cookieOnlyOptions are the options that only mean something for a cookie,
// refused with header, by their Caddyfile name.
func (s *StickyCookie) cookieOnlyOptions() []string {
	var set []string
	for opt, on := range map[string]bool{
		"domain":   s.Domain != "",
		"path":     s.Path != "" && s.Path != "/",
		"samesite": s.SameSite != "",
		"secure":   s.Secure != nil,
		"httponly": s.HTTPOnly,
		"max_age":  s.MaxAge != 0,
		"attr":     len(s.Attrs) > 0,
		"preserve": s.Preserve,
	} {
		if on {
			set = append(set, opt)
		}
	}
	return set
}

// validateHeader checks the header carrier's configuration and prepares it.
func (s *StickyCookie) validateHeader() error {
	if s.Header == "" {
		s.headerKey = ""
		return nil
	}
	if !validHeaderName(s.Header) {
		return fmt.Errorf("header %q is not a valid header name", s.Header)
	}
	switch strings.ToLower(s.Header) {
	case "cookie", "set-cookie", "host", "content-length", "transfer-encoding", "connection":
		return fmt.Errorf("header %s cannot carry persistence", s.Header)
	}
	if s.Mode != ModeInsert {
		return fmt.Errorf("header works in insert mode only, not %s (rewrite and prefix edit the application's cookie)", s.Mode)
	}
	if opts := s.cookieOnlyOptions(); len(opts) > 0 {
		sort.Strings(opts)
		return fmt.Errorf("%s only apply to a cookie, not with header %s", strings.Join(opts, ", "), s.Header)
	}
	s.headerKey = http.CanonicalHeaderKey(s.Header)
	return nil
}

// readHeader returns the value the request carries in the header, and with
// indirect removes the header before the application sees it. Only the
// first line counts; a value that is empty once trimmed, holds bytes a
// cookie value cannot, or is longer than a cookie value may be, is
// unusable (outcome invalid). Like readCookie, an edited request keeps its
// first reading in vars for later Select calls.
func (s *StickyCookie) readHeader(r *http.Request, vars map[string]any) (string, haproxycookie.Presence) {
	lines := r.Header[s.headerKey]
	if len(lines) == 0 {
		return "", haproxycookie.Absent
	}
	value := strings.TrimSpace(lines[0])
	presence := haproxycookie.Present
	if value == "" || len(value) > haproxycookie.MaxValueLen || !validCookieValue(value) {
		presence = haproxycookie.Unusable
	}
	if s.Indirect {
		delete(r.Header, s.headerKey)
		if vars != nil {
			vars[s.seenKey] = &presentedCookie{value: value, presence: presence}
		}
	}
	return value, presence
}

// headerValue is the value a response carries for rec.
func (s *StickyCookie) headerValue(rec *serverRecord, now, firstSeen time.Time) string {
	if s.MaxIdle == 0 && s.MaxLife == 0 {
		return rec.value
	}
	return string(haproxycookie.AppendIssued(nil, rec.value, now, firstSeen, time.Duration(s.MaxIdle), time.Duration(s.MaxLife)))
}

// headerOnResponse sets the header when the cookie would have been set, and
// otherwise removes one the application may have sent of that name, so the
// client only ever sees the proxy's value.
func (s *StickyCookie) headerOnResponse(req *http.Request, res *http.Response, d *cookieDecision) {
	h := res.Header
	delete(h, s.headerKey)
	if d.header == "" || (s.PostOnly && req.Method != http.MethodPost) {
		return
	}
	h[s.headerKey] = []string{d.header}
	s.inserts.Inc()
	s.makePrivate(req, res)
}

// validHeaderName accepts RFC 9110 tokens.
func validHeaderName(name string) bool { return validCookieName(name) }
