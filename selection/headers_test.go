package selection

import (
	"net/http"
	"reflect"
	"testing"
)

func TestRemoveSetCookieKeepsOthers(t *testing.T) {
	h := http.Header{"Set-Cookie": {"a=1; Path=/", "SRV=app; HttpOnly", " SRV =x", "SRVX=keep", "b=2"}}
	removeSetCookie(h, "SRV")
	want := []string{"a=1; Path=/", "SRVX=keep", "b=2"}
	if !reflect.DeepEqual(h["Set-Cookie"], want) {
		t.Errorf("got %q, want %q", h["Set-Cookie"], want)
	}
	h = http.Header{"Set-Cookie": {"SRV=1"}}
	removeSetCookie(h, "SRV")
	if _, ok := h["Set-Cookie"]; ok {
		t.Error("empty Set-Cookie list must be deleted")
	}
}

func TestRewriteSetCookieKeepsAttributes(t *testing.T) {
	h := http.Header{"Set-Cookie": {"SRV=old; Path=/x; Secure", "other=1", "SRV=novalue"}}
	if !rewriteSetCookie(h, "SRV", func(old string) string { return "s1~" + old }) {
		t.Fatal("nothing rewritten")
	}
	want := []string{"SRV=s1~old; Path=/x; Secure", "other=1", "SRV=s1~novalue"}
	if !reflect.DeepEqual(h["Set-Cookie"], want) {
		t.Errorf("got %q, want %q", h["Set-Cookie"], want)
	}
	if rewriteSetCookie(http.Header{"Set-Cookie": {"x=1"}}, "SRV", func(string) string { return "" }) {
		t.Error("reported a rewrite with no cookie of that name")
	}
}

func TestSharedCacheable(t *testing.T) {
	cases := []struct {
		method string
		status int
		hdr    http.Header
		want   bool
	}{
		{"GET", 200, nil, true},
		{"HEAD", 404, nil, true},
		{"GET", 302, nil, false},
		{"GET", 302, http.Header{"Cache-Control": {"max-age=60"}}, true},
		{"GET", 500, http.Header{"Expires": {"Thu, 01 Dec 2050 16:00:00 GMT"}}, true},
		{"GET", 200, http.Header{"Cache-Control": {"public, no-store"}}, false},
		{"GET", 200, http.Header{"Cache-Control": {"Private"}}, false},
		{"GET", 200, http.Header{"Cache-Control": {"no-cache=\"Set-Cookie\""}}, false},
		{"GET", 200, http.Header{"Pragma": {"no-cache"}}, false},
		{"GET", 200, http.Header{"Pragma": {"no-cache"}, "Cache-Control": {"max-age=5"}}, true},
		{"POST", 200, http.Header{"Cache-Control": {"public"}}, false},
	}
	for _, tc := range cases {
		req := &http.Request{Method: tc.method}
		res := &http.Response{StatusCode: tc.status, Header: tc.hdr}
		if res.Header == nil {
			res.Header = http.Header{}
		}
		if got := sharedCacheable(req, res); got != tc.want {
			t.Errorf("%s %d %v: got %v, want %v", tc.method, tc.status, tc.hdr, got, tc.want)
		}
	}
}

func TestValidCookieNameAndValue(t *testing.T) {
	for _, ok := range []string{"SERVERID", "JSESSIONID", "__Host-s", "a.b_c-d"} {
		if !validCookieName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", "a b", "a;b", "a=b", "é", "a\"b"} {
		if validCookieName(bad) {
			t.Errorf("name %q accepted", bad)
		}
	}
	for _, bad := range []string{"", "a b", "a;b", "a,b", "\"q\"", "a\\b"} {
		if validCookieValue(bad) {
			t.Errorf("value %q accepted", bad)
		}
	}
}
