package selection

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// nilThenFallback answers nil for its first `nils` calls, as a fallback does
// when nothing is available, and then defers to next. Caddy calls Select
// again after a nil selection while try_duration lasts.
type nilThenFallback struct {
	nils  int
	calls int
	next  reverseproxy.Selector
}

func (f *nilThenFallback) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	f.calls++
	if f.calls <= f.nils {
		return nil
	}
	return f.next.Select(pool, r, w)
}

// Issue 8: prefix mode stripped the application's cookie a second time when
// Caddy called Select again after a nil selection: srv~a~b reached the app
// as b.
func TestPrefixStripIsIdempotentAcrossNilSelection(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"name": "JSESSIONID", "mode": "prefix"}`)
	s.fallback = &nilThenFallback{nils: 1, next: reverseproxy.FirstSelection{}}
	// the prefix names no server of the pool, so the fallback chooses
	r := newRequest("JSESSIONID=gone~a~b; x=y")
	w := httptest.NewRecorder()
	if up := s.Select(pool, r, w); up != nil {
		t.Fatalf("first attempt: %v, want the fallback's nil", up)
	}
	if got := r.Header.Get("Cookie"); got != "JSESSIONID=a~b; x=y" {
		t.Fatalf("after the first attempt the app would see %q", got)
	}
	if up := s.Select(pool, r, w); up == nil {
		t.Fatal("second attempt found no upstream")
	}
	if got := r.Header.Get("Cookie"); got != "JSESSIONID=a~b; x=y" {
		t.Errorf("after a second Select the app would see %q, want JSESSIONID=a~b; x=y", got)
	}
}

// The same, for a prefix that names a server: the second attempt must still
// route by the server part, which the first attempt already removed from the
// request.
func TestPrefixHitSurvivesNilSelection(t *testing.T) {
	pool := newPool(3)
	s := provisionedCookie(t, `{"name": "JSESSIONID", "mode": "prefix"}`)
	want := pool[2]
	r := newRequest("JSESSIONID=" + s.valueFor(want.Dial) + "~app~1")
	// the first pass strips and routes; simulate a nil selection by making
	// the pool empty for the first call
	if up := s.Select(reverseproxy.UpstreamPool{}, r, httptest.NewRecorder()); up != nil {
		t.Fatalf("empty pool selected %v", up)
	}
	up := s.Select(pool, r, httptest.NewRecorder())
	if up != want {
		t.Fatalf("second attempt went to %v, want %s (the prefix's server)", up, want.Dial)
	}
	if got := r.Header.Get("Cookie"); got != "JSESSIONID=app~1" {
		t.Errorf("app would see %q", got)
	}
}

// indirect removes our cookie from the request; a second Select after a nil
// selection must still see the value the client sent.
func TestIndirectHitSurvivesNilSelection(t *testing.T) {
	pool := newPool(3)
	s := provisionedCookie(t, `{"indirect": true}`)
	want := pool[1]
	r := newRequest("SERVERID=" + s.valueFor(want.Dial) + "; a=1")
	if up := s.Select(reverseproxy.UpstreamPool{}, r, httptest.NewRecorder()); up != nil {
		t.Fatalf("empty pool selected %v", up)
	}
	if up := s.Select(pool, r, httptest.NewRecorder()); up != want {
		t.Fatalf("second attempt went to %v, want %s", up, want.Dial)
	}
	if d := decisionOf(r, s); d.outcome != OutcomeHit {
		t.Errorf("outcome %v, want hit", d.outcome)
	}
	if got := strings.Join(r.Header["Cookie"], "|"); got != "a=1" {
		t.Errorf("app would see %q", got)
	}
}
