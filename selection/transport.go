package selection

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// responseHook is implemented by policies that must see the upstream's
// response: HAProxy applies cookie persistence to what the server sends, and
// stick tables learn keys from it.
type responseHook interface {
	onResponse(vars map[string]any, req *http.Request, res *http.Response)
}

// responseTransport wraps the transport of the reverse_proxy handler that
// uses one of our policies. Selection policies only see the request, and
// Caddy offers plugins no other point between the upstream's response and
// the copy of its headers to the client; rewriting res.Header here is what
// makes nocache, rewrite, prefix and preserve exact, and it runs once per
// attempt, so a retried request can never carry two of our cookies.
//
// Caddy discovers optional transport features through interfaces; every one
// of them is forwarded with the neutral answer when the wrapped transport
// lacks it, so wrapping never changes how Caddy treats the transport.
type responseTransport struct {
	next http.RoundTripper

	mu    sync.RWMutex
	hooks []responseHook
}

// RoundTrip forwards the request and lets each hook edit the response
// headers before Caddy copies them.
func (t *responseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	if err != nil || res == nil {
		return res, err
	}
	// Requests that did not come through a Caddy server (active health
	// checks) carry no vars and are none of our business.
	vars, _ := req.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if vars == nil {
		return res, nil
	}
	t.mu.RLock()
	hooks := t.hooks
	t.mu.RUnlock()
	for _, h := range hooks {
		h.onResponse(vars, req, res)
	}
	return res, nil
}

func (t *responseTransport) addHook(h responseHook) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, existing := range t.hooks {
		if existing == h {
			return
		}
	}
	t.hooks = append(append([]responseHook(nil), t.hooks...), h)
}

// Unwrap gives the wrapped transport, for tools that inspect it.
func (t *responseTransport) Unwrap() http.RoundTripper { return t.next }

// TLSEnabled forwards reverseproxy.TLSTransport.
func (t *responseTransport) TLSEnabled() bool {
	if x, ok := t.next.(reverseproxy.TLSTransport); ok {
		return x.TLSEnabled()
	}
	return false
}

// EnableTLS forwards reverseproxy.TLSTransport.
func (t *responseTransport) EnableTLS(base *reverseproxy.TLSConfig) error {
	if x, ok := t.next.(reverseproxy.TLSTransport); ok {
		return x.EnableTLS(base)
	}
	return errors.New("transport does not support TLS")
}

// ProxyProtocolEnabled forwards reverseproxy.ProxyProtocolTransport.
func (t *responseTransport) ProxyProtocolEnabled() bool {
	if x, ok := t.next.(reverseproxy.ProxyProtocolTransport); ok {
		return x.ProxyProtocolEnabled()
	}
	return false
}

// OverrideHealthCheckScheme forwards
// reverseproxy.HealthCheckSchemeOverriderTransport.
func (t *responseTransport) OverrideHealthCheckScheme(base *url.URL, port string) {
	if x, ok := t.next.(reverseproxy.HealthCheckSchemeOverriderTransport); ok {
		x.OverrideHealthCheckScheme(base, port)
	}
}

// RequiresContentLength forwards
// reverseproxy.ContentLengthRequiredTransport.
func (t *responseTransport) RequiresContentLength() bool {
	if x, ok := t.next.(reverseproxy.ContentLengthRequiredTransport); ok {
		return x.RequiresContentLength()
	}
	return false
}

// DefaultBufferSizes forwards reverseproxy.BufferedTransport.
func (t *responseTransport) DefaultBufferSizes() (int64, int64) {
	if x, ok := t.next.(reverseproxy.BufferedTransport); ok {
		return x.DefaultBufferSizes()
	}
	return 0, 0
}

// RequestHeaderOps forwards reverseproxy.RequestHeaderOpsTransport.
func (t *responseTransport) RequestHeaderOps() *headers.HeaderOps {
	if x, ok := t.next.(reverseproxy.RequestHeaderOpsTransport); ok {
		return x.RequestHeaderOps()
	}
	return nil
}

// attachResponseHook finds the reverse_proxy handler that is provisioning the
// policy (directly or as a fallback of another policy) and routes its
// upstream responses through h. A handler without a transport yet gets
// Caddy's default one, built the way the handler would build it.
func attachResponseHook(ctx caddy.Context, h responseHook) (created *reverseproxy.HTTPTransport, err error) {
	proxy := enclosingProxy(ctx)
	if proxy == nil {
		return nil, errors.New("this policy must be used as the selection policy of a reverse_proxy handler")
	}
	if rt, ok := proxy.Transport.(*responseTransport); ok {
		rt.addHook(h)
		return nil, nil
	}
	next := proxy.Transport
	if next == nil {
		t := new(reverseproxy.HTTPTransport)
		if err := t.Provision(ctx); err != nil {
			return nil, fmt.Errorf("provisioning default transport: %v", err)
		}
		next, created = t, t
	}
	rt := &responseTransport{next: next}
	rt.addHook(h)
	proxy.Transport = rt
	return created, nil
}

func enclosingProxy(ctx caddy.Context) *reverseproxy.Handler {
	mods := ctx.Modules()
	for i := len(mods) - 1; i >= 0; i-- {
		if h, ok := mods[i].(*reverseproxy.Handler); ok {
			return h
		}
	}
	return nil
}

// Interface guards: the wrapper must keep offering everything Caddy asks a
// transport for.
var (
	_ http.RoundTripper                                = (*responseTransport)(nil)
	_ reverseproxy.TLSTransport                        = (*responseTransport)(nil)
	_ reverseproxy.ProxyProtocolTransport              = (*responseTransport)(nil)
	_ reverseproxy.HealthCheckSchemeOverriderTransport = (*responseTransport)(nil)
	_ reverseproxy.ContentLengthRequiredTransport      = (*responseTransport)(nil)
	_ reverseproxy.BufferedTransport                   = (*responseTransport)(nil)
	_ reverseproxy.RequestHeaderOpsTransport           = (*responseTransport)(nil)
)
