package sticky

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(StatusPage))
	httpcaddyfile.RegisterHandlerDirective("sticky_status", parseStatusCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("sticky_status", httpcaddyfile.After, "metrics")
}

// StatusPage serves a status page for people: tables (used / size, hit
// ratio, evictions), servers per sticky_cookie policy with Caddy's health
// of each, users stuck to each server, drain state, last new user, and the
// replication peers. The page is self-contained (no external assets),
// refreshes itself, and reads fine without JavaScript (which only adds
// sorting). A request with `Accept: application/json` gets the same data
// as JSON. It is read-only unless Actions is set.
//
// Protect it like any admin page (basic_auth, a private listener): it
// names every upstream.
type StatusPage struct {
	// Show drain and undrain buttons. Their POSTs are refused unless they
	// come from this page: same origin (Sec-Fetch-Site, else Origin, else
	// Referer, compared with the request's host) and carrying this
	// process's form token.
	Actions bool `json:"actions,omitempty"`

	// How often the page reloads itself. Default: 5s; at least 1s.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*StatusPage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sticky_status",
		New: func() caddy.Module { return new(StatusPage) },
	}
}

const (
	defaultStatusRefresh = 5 * time.Second
	// maxActionBody bounds a drain form: a token and a server address.
	maxActionBody = 8 << 10
)

// Provision validates the settings.
func (p *StatusPage) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	if p.Refresh == 0 {
		p.Refresh = caddy.Duration(defaultStatusRefresh)
	}
	if time.Duration(p.Refresh) < time.Second {
		return fmt.Errorf("refresh %s: must be at least 1s", time.Duration(p.Refresh))
	}
	return nil
}

// ServeHTTP answers GET and HEAD with the page (or its JSON), and POST with
// a drain action when Actions is on.
func (p *StatusPage) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost:
		if !p.Actions {
			w.Header().Set("Allow", "GET, HEAD")
			return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("the status page is read-only (no actions)"))
		}
		return p.serveAction(w, r)
	default:
		allow := "GET, HEAD"
		if p.Actions {
			allow += ", POST"
		}
		w.Header().Set("Allow", allow)
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
	}
	rep := gatherStatus()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Add("Vary", "Accept")
	if wantsJSON(r) {
		b, err := json.Marshal(rep)
		if err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
		return nil
	}
	nonce := randomToken(16)
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, p.view(rep, nonce)); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	_, _ = w.Write(buf.Bytes())
	return nil
}

// wantsJSON: an Accept header that asks for JSON and not for HTML (a
// browser's asks for text/html).
func wantsJSON(r *http.Request) bool {
	acc := strings.ToLower(strings.Join(r.Header.Values("Accept"), ","))
	return strings.Contains(acc, "application/json") && !strings.Contains(acc, "text/html")
}

// serveAction drains or undrains a server from the page's form, then sends
// the browser back to the page (POST, redirect, GET: a reload does not
// repeat the action).
func (p *StatusPage) serveAction(w http.ResponseWriter, r *http.Request) error {
	if err := sameOrigin(r); err != nil {
		p.logger.Debug("status page action refused", zap.Error(err))
		return caddyhttp.Error(http.StatusForbidden, err)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxActionBody)
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("bad form: %v", err))
	}
	token := r.PostForm.Get("token")
	if subtle.ConstantTimeCompare([]byte(token), []byte(actionToken())) != 1 {
		return caddyhttp.Error(http.StatusForbidden, errors.New("missing or stale form token: reload the status page"))
	}
	server := r.PostForm.Get("server")
	if server == "" || strings.TrimSpace(server) != server {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("bad server %q", server))
	}
	var drained bool
	switch a := r.PostForm.Get("action"); a {
	case "drain":
		drained = true
	case "undrain":
	default:
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("unknown action %q (drain or undrain)", a))
	}
	known := false
	for _, s := range gatherStatus().Servers {
		known = known || s.Server == server
	}
	if !known {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("no table or policy knows server %q", server))
	}
	changed, err := state.setDrained(r.Context(), server, drained)
	if err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, fmt.Errorf("drain state changed on this instance only: the shared store did not take it: %v", err))
	}
	if changed {
		p.logger.Info("drain changed from the status page", zap.String("server", server), zap.Bool("drained", drained), zap.String("remote", r.RemoteAddr))
	}
	http.Redirect(w, r, pageURI(r), http.StatusSeeOther)
	return nil
}

// pageURI is the page's own address as the browser asked for it (before
// any handle_path stripping).
func pageURI(r *http.Request) string {
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return orig.URL.RequestURI()
	}
	return r.URL.RequestURI()
}

// sameOrigin refuses requests a browser sent on behalf of another site.
// Browsers send Sec-Fetch-Site (all current ones) or at least Origin with
// a form POST; the Referer is the last resort. A POST with none of them is
// refused too: the page's own forms always produce one.
func sameOrigin(r *http.Request) error {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		if s == "same-origin" {
			return nil
		}
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site: %s)", s)
	}
	from, what := r.Header.Get("Origin"), "Origin"
	if from == "" {
		from, what = r.Header.Get("Referer"), "Referer"
	}
	if from == "" {
		return errors.New("request without Origin or Referer refused: use the page's buttons")
	}
	u, err := url.Parse(from)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("cross-site request refused (%s: %q, host %q)", what, from, r.Host)
	}
	return nil
}

// actionToken is this process's form token: a page rendered by this
// process carries it, a page on another site cannot read it.
var actionToken = sync.OnceValue(func() string { return randomToken(32) })

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	if n == 16 {
		return base64.RawStdEncoding.EncodeToString(b)
	}
	return hex.EncodeToString(b)
}

//go:embed status.html
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	// bar rounds a percentage to the 5% steps the page's CSS has classes
	// for (its CSP allows no inline style attributes).
	"bar": func(pct int) int { return min(max((pct+2)/5*5, 0), 100) },
	"actionArgs": func(token string, s serverView) actionArgs {
		return actionArgs{Token: token, Server: s}
	},
}).Parse(statusHTML))

type actionArgs struct {
	Token  string
	Server serverView
}

// statusView is the page's data, formatted: the template only lays it out.
type statusView struct {
	Generated, GeneratedISO string
	Refresh                 int
	Actions                 bool
	Token, Nonce            string
	Tables                  []tableView
	Servers                 []serverView
	Policies                []policyView
	Peers                   []peerGroupView
	PeersOther              string // peer data of a shape this page does not know, as JSON
	Stores                  []storeStatus
	TotalStuck              int
	DrainedCount            int
}

type tableView struct {
	Name, Type, Expire, Peers string
	Used, Size                int
	FillPct                   int
	FillLevel                 string // ok, warn, full
	HitRatio                  string
	HitSort                   string
	Hits, Misses, Expired     uint64
	Stores, Evictions         uint64
	Refused                   uint64
}

type serverView struct {
	Server            string
	Stuck             int
	SharePct          int
	Drained           bool
	LastNew, LastNewT string
	LastNewSort       int64
	Tables, Policies  string
	Health, HealthCls string
	Requests, Fails   int
}

type policyView struct {
	Policy  string
	Servers []serverView
}

type peerGroupView struct {
	Group, Node, Address, Tables string
	Members                      []peerMemberView
}

type peerMemberView struct {
	Name, Address, State, StateCls string
	LastContact, LastContactT      string
	Sent, Received                 uint64
	Lag                            string
}

func (p *StatusPage) view(rep statusReport, nonce string) statusView {
	now := rep.Time
	v := statusView{
		Generated:    now.Format("2006-01-02 15:04:05 UTC"),
		GeneratedISO: now.Format(time.RFC3339),
		Refresh:      int(math.Round(time.Duration(p.Refresh).Seconds())),
		Actions:      p.Actions,
		Nonce:        nonce,
		DrainedCount: len(rep.Drained),
	}
	if p.Actions {
		v.Token = actionToken()
	}
	for _, t := range rep.Tables {
		tv := tableView{
			Name: t.Name, Type: t.Type, Expire: shortDuration(t.Expire), Peers: t.Peers, Used: t.Used, Size: t.Size,
			Hits: t.Stats.Hits, Misses: t.Stats.Misses, Expired: t.Stats.Expired, Stores: t.Stats.Stores,
			Evictions: t.Stats.Evictions, Refused: t.Stats.Refused, HitRatio: "–", HitSort: "-1",
		}
		if t.Len > 0 {
			tv.Type += " len " + strconv.Itoa(t.Len)
		}
		if t.Size > 0 {
			tv.FillPct = int(math.Ceil(100 * float64(t.Used) / float64(t.Size)))
		}
		switch {
		case tv.FillPct >= 95:
			tv.FillLevel = "full"
		case tv.FillPct >= 80:
			tv.FillLevel = "warn"
		default:
			tv.FillLevel = "ok"
		}
		if t.HitRatio != nil {
			tv.HitRatio = strconv.FormatFloat(100**t.HitRatio, 'f', 1, 64) + "%"
			tv.HitSort = strconv.FormatFloat(*t.HitRatio, 'f', 6, 64)
		}
		v.Tables = append(v.Tables, tv)
	}
	// Health of a server across the policies that route to it.
	health := map[string][]serverView{}
	for _, pol := range rep.Policies {
		pv := policyView{Policy: pol.Policy}
		total := 0
		for _, up := range pol.Servers {
			total += up.Stuck
		}
		for _, up := range pol.Servers {
			sv := makeServerView(serverInfo{Server: up.Server, Stuck: up.Stuck, Drained: up.Drained, LastNewUser: up.LastNewUser}, total, now)
			sv.Requests, sv.Fails = up.Requests, up.Fails
			switch {
			case !up.Healthy:
				sv.Health, sv.HealthCls = "down", "bad"
			case !up.Available:
				sv.Health, sv.HealthCls = "full", "warn"
			default:
				sv.Health, sv.HealthCls = "up", "ok"
			}
			health[up.Server] = append(health[up.Server], sv)
			pv.Servers = append(pv.Servers, sv)
		}
		v.Policies = append(v.Policies, pv)
	}
	for _, s := range rep.Servers {
		v.TotalStuck += s.Stuck
	}
	for _, s := range rep.Servers {
		sv := makeServerView(s, v.TotalStuck, now)
		sv.Health, sv.HealthCls = "–", "none"
		for _, h := range health[s.Server] {
			// the worst view wins: down anywhere is down
			if sv.HealthCls == "none" || h.HealthCls == "bad" || (h.HealthCls == "warn" && sv.HealthCls == "ok") {
				sv.Health, sv.HealthCls = h.Health, h.HealthCls
			}
		}
		v.Servers = append(v.Servers, sv)
	}
	v.Stores = rep.Stores
	switch peers := rep.Peers.(type) {
	case []peerGroupStatus:
		for _, g := range peers {
			gv := peerGroupView{Group: g.Group, Node: g.Node, Address: g.Address, Tables: strings.Join(g.Tables, ", ")}
			for _, m := range g.Members {
				mv := peerMemberView{Name: m.Name, Address: m.Address, State: m.State, Sent: m.UpdatesSent, Received: m.UpdatesReceived,
					Lag: m.Lag.Round(time.Millisecond).String(), LastContact: "never"}
				switch m.State {
				case "alive":
					mv.StateCls = "ok"
				case "suspect":
					mv.StateCls = "warn"
				default:
					mv.StateCls = "bad"
				}
				if !m.LastContact.IsZero() {
					mv.LastContact = formatAgo(now.Sub(m.LastContact)) + " ago"
					mv.LastContactT = m.LastContact.UTC().Format(time.RFC3339)
				}
				gv.Members = append(gv.Members, mv)
			}
			v.Peers = append(v.Peers, gv)
		}
	default:
		if b, err := json.MarshalIndent(peers, "", "  "); err == nil && string(b) != "[]" && string(b) != "null" {
			v.PeersOther = string(b)
		}
	}
	return v
}

// shortDuration drops the zero units Go prints: 30m0s reads 30m.
func shortDuration(s string) string {
	if strings.HasSuffix(s, "m0s") || strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func makeServerView(s serverInfo, total int, now time.Time) serverView {
	sv := serverView{Server: s.Server, Stuck: s.Stuck, Drained: s.Drained, LastNew: "never", Tables: formatPerTable(s.Tables), Policies: strings.Join(s.Policies, ", ")}
	if total > 0 {
		sv.SharePct = int(math.Round(100 * float64(s.Stuck) / float64(total)))
	}
	if s.LastNewUser != nil {
		sv.LastNew = formatAgo(now.Sub(*s.LastNewUser)) + " ago"
		sv.LastNewT = s.LastNewUser.UTC().Format(time.RFC3339)
		sv.LastNewSort = s.LastNewUser.UnixMilli()
	}
	return sv
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	sticky_status [<matcher>] {
//		actions
//		refresh <duration>
//	}
func (p *StatusPage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "actions":
			if d.NextArg() {
				return d.ArgErr()
			}
			p.Actions = true
		case "refresh":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil {
				return d.Errf("refresh %q: %v", d.Val(), err)
			}
			if dur < time.Second {
				return d.Errf("refresh %s: must be at least 1s", dur)
			}
			p.Refresh = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown sticky_status option %q (known: actions, refresh)", d.Val())
		}
	}
	return nil
}

func parseStatusCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(StatusPage)
	err := p.UnmarshalCaddyfile(h.Dispenser)
	return p, err
}

// Interface guards
var (
	_ caddy.Module                = (*StatusPage)(nil)
	_ caddy.Provisioner           = (*StatusPage)(nil)
	_ caddyhttp.MiddlewareHandler = (*StatusPage)(nil)
	_ caddyfile.Unmarshaler       = (*StatusPage)(nil)
)
