package selection

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// responseHook is implemented by policies that must see the upstream's
// response: HAProxy applies cookie persistence to what the server sends, and
// stick tables learn keys from it.
type responseHook interface {
	onResponse(vars map[string]any, req *http.Request, res *http.Response)
	// onError sees the error of an attempt whose round trip failed and
	// returns the error Caddy should act on (strict persistence answers 503
	// for a user whose server failed).
	onError(vars map[string]any, req *http.Request, err error) error
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
	// created is the transport the policies built because the handler had
	// none yet; the last policy to leave cleans it up.
	created *reverseproxy.HTTPTransport

	mu    sync.RWMutex
	hooks []responseHook
}

// RoundTrip forwards the request and lets each hook edit the response
// headers before Caddy copies them.
func (t *responseTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	// Requests that did not come through a Caddy server (active health
	// checks) carry no vars and are none of our business.
	vars, _ := req.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if vars == nil {
		return res, err
	}
	t.mu.RLock()
	hooks := t.hooks
	t.mu.RUnlock()
	if err != nil {
		for _, h := range hooks {
			err = h.onError(vars, req, err)
		}
		return res, err
	}
	if res == nil {
		return res, err
	}
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

// removeHook detaches h and reports how many hooks remain.
func (t *responseTransport) removeHook(h responseHook) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := make([]responseHook, 0, len(t.hooks))
	for _, existing := range t.hooks {
		if existing != h {
			kept = append(kept, existing)
		}
	}
	t.hooks = kept
	return len(kept)
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

// responseSide is a policy's hold on the response side of the reverse_proxy
// handler it serves, the one place that wraps, checks and releases the
// handler's transport for both policies, however they are nested (directly,
// as each other's fallback, or as the fallback of Caddy's own policies).
//
// Caddy v2.11.9 provisions the handler's transport before its selection
// policy (Handler.Provision loads TransportRaw, then SelectionPolicyRaw,
// and builds its default transport only when none is set by then), so the
// wrapper installed at Provision is the transport requests use. Nothing in
// Caddy promises that order: the first Select checks that the wrapper is
// still in the handler's transport chain, and when it is not, the policy
// logs one error, counts every request it serves so
// (caddy_sticky_response_side_missing_total) and falls back to what it can
// do without seeing responses (see the policies' degraded paths), instead of
// silently dropping cookies and stores.
type responseSide struct {
	proxy   *reverseproxy.Handler
	rt      *responseTransport
	hook    responseHook
	logger  *zap.Logger
	missing prometheus.Counter
	state   atomic.Uint32
	logOnce sync.Once
}

const (
	sideUnchecked uint32 = iota
	sideInstalled
	sideMissing
)

// attach finds the reverse_proxy handler that is provisioning the policy and
// routes its upstream responses through h. A handler without a transport yet
// gets Caddy's default one, built the way the handler would build it.
func (rs *responseSide) attach(ctx caddy.Context, h responseHook, policy, name string) error {
	proxy := enclosingProxy(ctx)
	if proxy == nil {
		return errors.New("this policy must be used as the selection policy of a reverse_proxy handler")
	}
	if err := registerCollectors(ctx.GetMetricsRegistry(), responseSideMissing); err != nil {
		return err
	}
	rt, ok := proxy.Transport.(*responseTransport)
	if !ok {
		rt = &responseTransport{next: proxy.Transport}
		if rt.next == nil {
			t := new(reverseproxy.HTTPTransport)
			if err := t.Provision(ctx); err != nil {
				return fmt.Errorf("provisioning default transport: %v", err)
			}
			rt.next, rt.created = t, t
		}
		proxy.Transport = rt
	}
	rt.addHook(h)
	rs.proxy, rs.rt, rs.hook = proxy, rt, h
	rs.logger = ctx.Logger()
	rs.missing = responseSideMissing.WithLabelValues(policy, name)
	return nil
}

// release detaches the policy; the last policy to leave a transport the
// policies created cleans it up (it closes its idle connections).
func (rs *responseSide) release() error {
	if rs.rt == nil {
		return nil
	}
	rt := rs.rt
	rs.rt = nil
	if rt.removeHook(rs.hook) == 0 && rt.created != nil {
		return rt.created.Cleanup()
	}
	return nil
}

// installed reports whether the handler's responses pass through the
// policy's hook. The check runs at the first request; afterwards it is one
// atomic load. A policy that was never attached (only unit tests set a
// policy up without a handler) has nothing to check.
func (rs *responseSide) installed() bool {
	switch rs.state.Load() {
	case sideInstalled:
		return true
	case sideMissing:
		rs.missing.Inc()
		return false
	}
	if rs.proxy == nil {
		return true
	}
	if inChain(rs.proxy.Transport, rs.rt) {
		rs.state.Store(sideInstalled)
		return true
	}
	rs.state.Store(sideMissing)
	rs.logOnce.Do(func() {
		rs.logger.Error("the reverse_proxy's transport was replaced after this policy was provisioned: "+
			"responses bypass the policy, so cookies can only be set without seeing the response and keys learned from responses are not stored",
			zap.String("transport", fmt.Sprintf("%T", rs.proxy.Transport)))
	})
	rs.missing.Inc()
	return false
}

// inChain reports whether want is t or is wrapped by t.
func inChain(t http.RoundTripper, want *responseTransport) bool {
	for i := 0; t != nil && i < 16; i++ {
		if rt, ok := t.(*responseTransport); ok && rt == want {
			return true
		}
		u, ok := t.(interface{ Unwrap() http.RoundTripper })
		if !ok {
			return false
		}
		t = u.Unwrap()
	}
	return false
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
