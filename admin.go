package sticky

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
)

func init() {
	caddy.RegisterModule(new(AdminAPI))
}

// AdminAPI serves the sticky endpoints of Caddy's admin API, under /sticky/:
//
//	GET    /sticky/tables                             every table with its settings and counters
//	GET    /sticky/tables/{name}?key=&server=&limit=&after=
//	                                                  a page of entries, in key order
//	DELETE /sticky/tables/{name}[?server=]            clear the table, or one server's entries
//	GET    /sticky/tables/{name}/entries/{key}        one entry
//	PUT    /sticky/tables/{name}/entries/{key}        pin a key: {"server": "10.0.0.11:8080"}
//	DELETE /sticky/tables/{name}/entries/{key}        forget a key
//	GET    /sticky/peers                              replication peers
//	GET    /sticky/servers                            every known server: stuck users, drained, last new user
//	GET    /sticky/servers/{address}/drain            whether a server is drained
//	POST   /sticky/servers/{address}/drain            drain a server
//	DELETE /sticky/servers/{address}/drain            undrain it
//	GET    /sticky/cookie?server=&policy=             the cookie values that route to a server
//
// Path segments are percent-decoded one by one, so keys and addresses may
// contain '/', ':', '%' or spaces when escaped; a key of "." or ".." must be
// escaped as %2E, or the admin server's path cleaning redirects it. Errors are JSON objects
// {"error": "..."} with a status that says what was wrong.
//
// The handlers read the tables the newest running config published, at
// request time: the admin server outlives configs, so holding on to a
// config's app would serve stale (or stopped) tables after a reload.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (*AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sticky",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the one route that serves every /sticky/ endpoint. The
// endpoints route themselves rather than registering ServeMux patterns
// per method, because the mux answers unknown paths and wrong methods in
// plain text, and this API answers every error in JSON.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: adminPrefix,
		Handler: caddy.AdminHandlerFunc(a.serveHTTP),
	}}
}

const (
	adminPrefix = "/sticky/"
	// defaultLimit and maxLimit bound a page of entries: a whole table
	// of a million entries in one response would stall the admin
	// endpoint and the client.
	defaultLimit = 100
	maxLimit     = 10000
	// maxBodyBytes bounds a PUT body, which only ever holds one server
	// identity (at most sticktable.MaxServerLen bytes).
	maxBodyBytes = 8 << 10
)

// peerStatusSource answers GET /sticky/peers with the running config's
// peer groups; a variable so tests can answer without running a group.
var peerStatusSource = peerGroupsStatus

// peerStatus returns what GET /sticky/peers shows: never null, so clients
// can always iterate over it.
func peerStatus() any {
	v := peerStatusSource()
	if v == nil {
		return []any{}
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		return []any{}
	}
	return v
}

// cookieRoutes answers GET /sticky/cookie; a variable so tests can answer
// without provisioning a reverse proxy.
var cookieRoutes = func(server, cookie string) []selection.CookieRoute {
	return selection.CookieRoutes(state.cookiePolicies(), server, cookie)
}

// tableInfo is one table in GET /sticky/tables.
type tableInfo struct {
	Name string `json:"name"`
	// Type is the key type; Len is the key length of string and binary
	// tables (omitted for the fixed-size types).
	Type    string `json:"type"`
	Len     int    `json:"len,omitempty"`
	Size    int    `json:"size"`
	Used    int    `json:"used"`
	Expire  string `json:"expire"`
	NoPurge bool   `json:"nopurge"`
	Peers   string `json:"peers"`
	// Stats are counters since the table was created (it survives
	// reloads, so they do too).
	Stats tableStats `json:"stats"`
}

type tableStats struct {
	Hits       uint64 `json:"hits"`
	Misses     uint64 `json:"misses"`
	Expired    uint64 `json:"expired"`
	Invalid    uint64 `json:"invalid"`
	Empty      uint64 `json:"empty"`
	Stores     uint64 `json:"stores"`
	Evictions  uint64 `json:"evictions"`
	Refused    uint64 `json:"refused"`
	Reaped     uint64 `json:"reaped"`
	Applied    uint64 `json:"applied"`
	Stale      uint64 `json:"stale"`
	Tombstones int    `json:"tombstones"`
}

// entryInfo is one entry as the API shows it.
type entryInfo struct {
	Key    string `json:"key"`
	Server string `json:"server"`
	// ExpiresIn is in milliseconds, relative to the table's clock, so
	// clients need not agree with the server about the time.
	ExpiresIn int64 `json:"expires_in"`
	// UpdatedBy is the node that last wrote the entry's server (empty
	// without peers); UpdatedAt is when.
	UpdatedBy string `json:"updated_by"`
	UpdatedAt string `json:"updated_at,omitempty"`
}

// entryPage is the answer to GET /sticky/tables/{name}.
type entryPage struct {
	Entries []entryInfo `json:"entries"`
	More    bool        `json:"more"`
	// Next is the after= value of the following page, set when More is.
	Next string `json:"next,omitempty"`
}

type pinBody struct {
	Server *string `json:"server"`
}

type drainState struct {
	Server  string `json:"server"`
	Drained bool   `json:"drained"`
	// Changed says whether this request changed the state, so scripts
	// can tell a drain from a repeated one.
	Changed *bool `json:"changed,omitempty"`
}

// handlerFunc serves one method of one endpoint, with the path arguments
// already decoded.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// endpoint maps methods to handlers.
type endpoint map[string]handlerFunc

// methodOrder lists methods as the Allow header names them.
var methodOrder = []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete}

func (e endpoint) allow() string {
	var out []string
	for _, m := range methodOrder {
		if e[m] != nil {
			out = append(out, m)
		}
	}
	return strings.Join(out, ", ")
}

func (a *AdminAPI) serveHTTP(w http.ResponseWriter, r *http.Request) error {
	segs, err := pathSegments(r.URL)
	if err != nil {
		return err
	}
	ep := a.route(segs)
	if ep == nil {
		return apiErrorf(http.StatusNotFound, "no sticky admin endpoint at %s", r.URL.EscapedPath())
	}
	if r.Method == http.MethodOptions {
		w.Header().Set("Allow", ep.allow())
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err := refuseRedirected(r); err != nil {
		return err
	}
	h := ep[r.Method]
	if h == nil {
		w.Header().Set("Allow", ep.allow())
		return apiErrorf(http.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)", r.Method, r.URL.EscapedPath(), ep.allow())
	}
	return h(w, r)
}

// refuseRedirected refuses a change that arrives by following a redirect
// from another sticky path. The admin server redirects paths with "." or
// ".." segments to their cleaned form, so an unescaped key of ".." turns
// "DELETE .../entries/.." into "DELETE /sticky/tables/{name}", which clears
// the whole table; Go clients follow such redirects and say so in Referer.
func refuseRedirected(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	ref := r.Header.Get("Referer")
	if ref == "" {
		return nil
	}
	u, err := url.Parse(ref)
	if err != nil || !strings.HasPrefix(u.EscapedPath(), adminPrefix) || u.EscapedPath() == r.URL.EscapedPath() {
		return nil
	}
	return apiErrorf(http.StatusBadRequest, "refusing %s %s reached by a redirect from %s: escape '.' and '..' in keys and addresses as %%2E",
		r.Method, r.URL.EscapedPath(), u.EscapedPath())
}

// pathSegments splits the path after /sticky/ and decodes each segment on
// its own, so an escaped slash (%2F) stays inside its key instead of
// splitting it. Paths are exact: no trailing slash is tolerated, because
// clients such as curl turn a key of ".." (entries/..) into the table's
// path with a trailing slash, and a DELETE there must not clear the table.
func pathSegments(u *url.URL) ([]string, error) {
	p := u.EscapedPath()
	rest, ok := strings.CutPrefix(p, adminPrefix)
	if !ok {
		return nil, apiErrorf(http.StatusNotFound, "no sticky admin endpoint at %s", p)
	}
	if rest == "" {
		return nil, nil
	}
	raw := strings.Split(rest, "/")
	segs := make([]string, len(raw))
	for i, s := range raw {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, apiErrorf(http.StatusBadRequest, "bad escape in path segment %q: %v", s, err)
		}
		segs[i] = d
	}
	return segs, nil
}

// route finds the endpoint for the decoded path segments, or nil.
func (a *AdminAPI) route(segs []string) endpoint {
	switch {
	case len(segs) == 1 && segs[0] == "tables":
		return endpoint{http.MethodGet: a.listTables}
	case len(segs) == 2 && segs[0] == "tables":
		name := segs[1]
		return endpoint{
			http.MethodGet:    func(w http.ResponseWriter, r *http.Request) error { return a.showTable(w, r, name) },
			http.MethodDelete: func(w http.ResponseWriter, r *http.Request) error { return a.clearTable(w, r, name) },
		}
	case len(segs) == 4 && segs[0] == "tables" && segs[2] == "entries":
		name, key := segs[1], segs[3]
		return endpoint{
			http.MethodGet:    func(w http.ResponseWriter, r *http.Request) error { return a.getEntry(w, r, name, key) },
			http.MethodPut:    func(w http.ResponseWriter, r *http.Request) error { return a.pinEntry(w, r, name, key) },
			http.MethodDelete: func(w http.ResponseWriter, r *http.Request) error { return a.deleteEntry(w, r, name, key) },
		}
	case len(segs) == 1 && segs[0] == "peers":
		return endpoint{http.MethodGet: a.listPeers}
	case len(segs) == 1 && segs[0] == "servers":
		return endpoint{http.MethodGet: a.listServers} // servers.go
	case len(segs) == 3 && segs[0] == "servers" && segs[2] == "drain":
		addr := segs[1]
		return endpoint{
			http.MethodGet:    func(w http.ResponseWriter, r *http.Request) error { return a.drainStatus(w, r, addr) },
			http.MethodPost:   func(w http.ResponseWriter, r *http.Request) error { return a.setDrain(w, r, addr, true) },
			http.MethodDelete: func(w http.ResponseWriter, r *http.Request) error { return a.setDrain(w, r, addr, false) },
		}
	case len(segs) == 1 && segs[0] == "cookie":
		return endpoint{http.MethodGet: a.cookie}
	}
	return nil
}

func (a *AdminAPI) listTables(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	handles := state.tableList()
	out := make([]tableInfo, 0, len(handles))
	for _, h := range handles {
		cfg := h.table.Config()
		st := h.table.Stats()
		out = append(out, tableInfo{
			Name:    h.name,
			Type:    cfg.Type.String(),
			Len:     cfg.Len,
			Size:    cfg.Size,
			Used:    st.Entries,
			Expire:  cfg.Expire.String(),
			NoPurge: cfg.NoPurge,
			Peers:   state.tablePeers(h.name),
			Stats: tableStats{
				Hits: st.Hits, Misses: st.Misses, Expired: st.Expired,
				Invalid: st.Invalid, Empty: st.Empty, Stores: st.Stores,
				Evictions: st.Evictions, Refused: st.Refused, Reaped: st.Reaped,
				Applied: st.Applied, Stale: st.Stale, Tombstones: st.Tombstones,
			},
		})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *AdminAPI) showTable(w http.ResponseWriter, r *http.Request, name string) error {
	q, err := queryParams(r, "key", "server", "limit", "after")
	if err != nil {
		return err
	}
	h, err := lookupTable(name)
	if err != nil {
		return err
	}
	limit := defaultLimit
	if s, ok := q["limit"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return apiErrorf(http.StatusBadRequest, "limit must be a whole number from 1 to %d, not %q", maxLimit, s)
		}
		limit = n
	}
	if b := state.tableBacking(name); b != nil {
		return showStoreTable(w, r, name, h, b, q, limit)
	}
	entries, more, err := h.table.Entries(sticktable.Query{
		Key:    q["key"],
		Server: q["server"],
		After:  q["after"],
		Limit:  limit,
	})
	if err != nil {
		return tableError(name, err)
	}
	page := entryPage{Entries: make([]entryInfo, 0, len(entries)), More: more}
	now := h.table.Now()
	for _, e := range entries {
		page.Entries = append(page.Entries, makeEntryInfo(e, now))
	}
	if more && len(entries) > 0 {
		page.Next = entries[len(entries)-1].Key.String()
	}
	return writeJSON(w, http.StatusOK, page)
}

func (a *AdminAPI) clearTable(w http.ResponseWriter, r *http.Request, name string) error {
	q, err := queryParams(r, "server")
	if err != nil {
		return err
	}
	h, err := lookupTable(name)
	if err != nil {
		return err
	}
	server, byServer := q["server"]
	if byServer {
		// `?server=` with nothing after it is far more likely a script
		// with an unset variable than a wish to wipe the whole table.
		if server == "" {
			return apiErrorf(http.StatusBadRequest, "server is empty: give a server, or leave the parameter out to clear the whole table")
		}
		if b := state.tableBacking(name); b != nil {
			n, err := b.Clear(r.Context(), server)
			if err != nil {
				return storeUnavailable(name, err)
			}
			return writeJSON(w, http.StatusOK, map[string]any{"cleared": n, "server": server})
		}
		n := h.table.ClearServer(server)
		return writeJSON(w, http.StatusOK, map[string]any{"cleared": n, "server": server})
	}
	if b := state.tableBacking(name); b != nil {
		n, err := b.Clear(r.Context(), "")
		if err != nil {
			return storeUnavailable(name, err)
		}
		return writeJSON(w, http.StatusOK, map[string]any{"cleared": n})
	}
	n := h.table.Clear()
	return writeJSON(w, http.StatusOK, map[string]any{"cleared": n})
}

func (a *AdminAPI) getEntry(w http.ResponseWriter, r *http.Request, name, key string) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	h, err := lookupTable(name)
	if err != nil {
		return err
	}
	k, err := h.table.ParseKey(key)
	if err != nil {
		return tableError(name, err)
	}
	// Get, not Lookup: looking at an entry must not keep it alive.
	e, ok := h.table.GetKey(k)
	if !ok {
		return apiErrorf(http.StatusNotFound, "no entry for key %q in table %q", k.String(), name)
	}
	return writeJSON(w, http.StatusOK, makeEntryInfo(e, h.table.Now()))
}

func (a *AdminAPI) pinEntry(w http.ResponseWriter, r *http.Request, name, key string) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	h, err := lookupTable(name)
	if err != nil {
		return err
	}
	// Parse first: Pin counts a bad key as an invalid lookup, and a typo
	// at the admin API must not show up in the traffic metrics.
	k, err := h.table.ParseKey(key)
	if err != nil {
		return tableError(name, err)
	}
	server, err := readServer(w, r)
	if err != nil {
		return err
	}
	if b := state.tableBacking(name); b != nil {
		if err := b.Pin(r.Context(), k, server); err != nil {
			return storeUnavailable(name, err)
		}
		e, _ := h.table.GetKey(k)
		return writeJSON(w, http.StatusOK, makeEntryInfo(e, h.table.Now()))
	}
	e, err := h.table.Pin(key, server)
	if err != nil {
		return tableError(name, err)
	}
	return writeJSON(w, http.StatusOK, makeEntryInfo(e, h.table.Now()))
}

// readServer decodes the PUT body, strictly: a misspelt field would
// otherwise read as a missing server.
func readServer(w http.ResponseWriter, r *http.Request) (string, error) {
	const want = `the body must be a JSON object like {"server": "10.0.0.11:8080"}`
	if r.Body == nil {
		return "", apiErrorf(http.StatusBadRequest, "empty body: %s", want)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	var body pinBody
	if err := dec.Decode(&body); err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return "", apiErrorf(http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxBodyBytes)
		}
		if errors.Is(err, io.EOF) {
			return "", apiErrorf(http.StatusBadRequest, "empty body: %s", want)
		}
		return "", apiErrorf(http.StatusBadRequest, "bad body: %v; %s", err, want)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", apiErrorf(http.StatusBadRequest, "extra data after the JSON object; %s", want)
	}
	if body.Server == nil {
		return "", apiErrorf(http.StatusBadRequest, "no server given: %s", want)
	}
	server := *body.Server
	if strings.TrimSpace(server) == "" {
		return "", apiErrorf(http.StatusBadRequest, "server is empty: %s", want)
	}
	if strings.TrimSpace(server) != server {
		return "", apiErrorf(http.StatusBadRequest, "server %q has leading or trailing spaces", server)
	}
	if len(server) > sticktable.MaxServerLen {
		return "", apiErrorf(http.StatusBadRequest, "server identity of %d bytes is longer than %d", len(server), sticktable.MaxServerLen)
	}
	return server, nil
}

func (a *AdminAPI) deleteEntry(w http.ResponseWriter, r *http.Request, name, key string) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	h, err := lookupTable(name)
	if err != nil {
		return err
	}
	if b := state.tableBacking(name); b != nil {
		k, err := h.table.ParseKey(key)
		if err != nil {
			return tableError(name, err)
		}
		_, held := h.table.GetKey(k)
		if err := b.Delete(r.Context(), k); err != nil {
			return storeUnavailable(name, err)
		}
		return writeJSON(w, http.StatusOK, map[string]bool{"deleted": held})
	}
	deleted, err := h.table.Delete(key)
	if err != nil {
		return tableError(name, err)
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"deleted": deleted})
}

func (a *AdminAPI) listPeers(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, peerStatus())
}

func (a *AdminAPI) drainStatus(w http.ResponseWriter, r *http.Request, addr string) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	if addr == "" {
		return apiErrorf(http.StatusBadRequest, "empty server address")
	}
	return writeJSON(w, http.StatusOK, drainState{Server: addr, Drained: state.drained.Is(addr)})
}

func (a *AdminAPI) setDrain(w http.ResponseWriter, r *http.Request, addr string, drained bool) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	if addr == "" {
		return apiErrorf(http.StatusBadRequest, "empty server address")
	}
	if len(addr) > sticktable.MaxServerLen {
		// the drain table (which persists and replicates drains) holds
		// identities up to this length; a longer one could not be kept
		return apiErrorf(http.StatusBadRequest, "server identity of %d bytes is longer than %d", len(addr), sticktable.MaxServerLen)
	}
	changed, err := state.setDrained(r.Context(), addr, drained)
	if err != nil {
		return apiErrorf(http.StatusServiceUnavailable,
			"drain state changed on this instance only: the shared store did not take it (%v)", err)
	}
	return writeJSON(w, http.StatusOK, drainState{Server: addr, Drained: drained, Changed: &changed})
}

func (a *AdminAPI) cookie(w http.ResponseWriter, r *http.Request) error {
	q, err := queryParams(r, "server", "policy")
	if err != nil {
		return err
	}
	server, policy := q["server"], q["policy"]
	if server == "" {
		return apiErrorf(http.StatusBadRequest, "server is required, e.g. ?server=10.0.0.11:8080")
	}
	routes := cookieRoutes(server, policy)
	if len(routes) == 0 {
		if policy != "" {
			return apiErrorf(http.StatusNotFound, "no running sticky_cookie policy uses a cookie named %q", policy)
		}
		return apiErrorf(http.StatusNotFound, "no sticky_cookie policy is running")
	}
	return writeJSON(w, http.StatusOK, routes)
}

// queryParams parses the query string, refusing parameters the endpoint
// does not take and repeated ones: a misspelt filter must not silently
// widen a DELETE to the whole table.
func queryParams(r *http.Request, allowed ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, apiErrorf(http.StatusBadRequest, "bad query string: %v", err)
	}
	out := make(map[string]string, len(vals))
	for name, v := range vals {
		known := false
		for _, a := range allowed {
			if name == a {
				known = true
				break
			}
		}
		if !known {
			if len(allowed) == 0 {
				return nil, apiErrorf(http.StatusBadRequest, "unknown query parameter %q: this endpoint takes none", name)
			}
			return nil, apiErrorf(http.StatusBadRequest, "unknown query parameter %q (known: %s)", name, strings.Join(allowed, ", "))
		}
		if len(v) != 1 {
			return nil, apiErrorf(http.StatusBadRequest, "query parameter %q given %d times", name, len(v))
		}
		out[name] = v[0]
	}
	return out, nil
}

// lookupTable finds a published table or answers 404.
func lookupTable(name string) (*tableHandle, error) {
	if h := state.table(name); h != nil && h.table != nil {
		return h, nil
	}
	var names []string
	for _, h := range state.tableList() {
		names = append(names, strconv.Quote(h.name))
	}
	switch {
	case len(names) == 0:
		return nil, apiErrorf(http.StatusNotFound, "no stick table named %q: no tables are configured", name)
	case len(names) <= 20:
		return nil, apiErrorf(http.StatusNotFound, "no stick table named %q (tables: %s)", name, strings.Join(names, ", "))
	}
	return nil, apiErrorf(http.StatusNotFound, "no stick table named %q", name)
}

// tableError turns a table error into the status that says whose fault
// it is: the client's key or server, the table's capacity, or ours.
func tableError(table string, err error) error {
	switch {
	case errors.Is(err, sticktable.ErrEmptyKey):
		return apiErrorf(http.StatusBadRequest, "empty key")
	case errors.Is(err, sticktable.ErrInvalidKey), errors.Is(err, sticktable.ErrKeyType):
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("table %q: %w", table, err)}
	case errors.Is(err, sticktable.ErrEmptyServer):
		return apiErrorf(http.StatusBadRequest, "empty server")
	case errors.Is(err, sticktable.ErrFull), errors.Is(err, sticktable.ErrTooManyServers):
		// The request was fine; the table has no room for it.
		return caddy.APIError{HTTPStatus: http.StatusInsufficientStorage, Err: fmt.Errorf("table %q: %w", table, err)}
	}
	return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("table %q: %w", table, err)}
}

func makeEntryInfo(e sticktable.Entry, now time.Time) entryInfo {
	info := entryInfo{
		Key:       e.Key.String(),
		Server:    e.Server,
		ExpiresIn: max(e.ExpiresAt.Sub(now).Milliseconds(), 0),
		UpdatedBy: e.Node,
	}
	if e.Version != 0 {
		info.UpdatedAt = e.UpdatedAt().UTC().Format(time.RFC3339Nano)
	}
	return info
}

// writeJSON marshals before writing anything, so an encoding failure can
// still become a proper error response instead of half a body.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

func apiErrorf(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// Interface guards
var (
	_ caddy.Module      = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
