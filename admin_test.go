package sticky

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
)

// adminClock is the fixed time of the tables these tests build, so
// expires_in and updated_at have exact expected values.
var adminClock = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// adminTable builds a table on adminClock, without a background reaper, as
// node "node1".
func adminTable(t *testing.T, name string, cfg sticktable.Config, peers string) *tableHandle {
	t.Helper()
	tbl, err := sticktable.NewWithOptions(cfg, sticktable.Options{
		Now:          func() time.Time { return adminClock },
		Node:         "node1",
		ReapInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Close)
	h := &tableHandle{name: name, table: tbl}
	adminTablePeers[h] = peers
	return h
}

// adminTablePeers holds the peer group adminTable was given for a table.
var adminTablePeers = map[*tableHandle]string{}

// adminPublish publishes the handles as the running config's tables and
// restores whatever was published before when the test ends.
func adminPublish(t *testing.T, handles ...*tableHandle) {
	t.Helper()
	prev := state.view.Load()
	v := &stateView{byName: map[string]*tableHandle{}, peers: map[string]string{}, groups: prev.groups, cookies: prev.cookies}
	sorted := slices.Clone(handles)
	slices.SortFunc(sorted, func(a, b *tableHandle) int { return strings.Compare(a.name, b.name) })
	for _, h := range sorted {
		v.tables = append(v.tables, h)
		v.byName[h.name] = h
		v.peers[h.name] = adminTablePeers[h]
	}
	state.view.Store(v)
	t.Cleanup(func() { state.view.Store(prev) })
}

// setPeerStatus makes GET /sticky/peers answer fn until the test ends (nil:
// the real source).
func setPeerStatus(t *testing.T, fn func() any) {
	prev := peerStatusSource
	t.Cleanup(func() { peerStatusSource = prev })
	if fn == nil {
		fn = peerGroupsStatus
	}
	peerStatusSource = fn
}

// adminMux serves the module's routes the way Caddy's admin server does:
// through a ServeMux (with its path cleaning), rendering returned errors as
// JSON {"error": ...} with the APIError's status.
func adminMux() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range new(AdminAPI).Routes() {
		h := rt.Handler
		mux.Handle(rt.Pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			err := h.ServeHTTP(w, r)
			if err == nil {
				return
			}
			apiErr, ok := err.(caddy.APIError)
			if !ok {
				apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
			}
			if apiErr.HTTPStatus == 0 {
				apiErr.HTTPStatus = http.StatusInternalServerError
			}
			if apiErr.Message == "" && apiErr.Err != nil {
				apiErr.Message = apiErr.Err.Error()
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(apiErr.HTTPStatus)
			_ = json.NewEncoder(w).Encode(apiErr)
		}))
	}
	return mux
}

type adminResponse struct {
	status int
	header http.Header
	body   string
}

// decode unmarshals the body into v, failing the test if it is not JSON.
func (r adminResponse) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("response is not JSON (%v): %q", err, r.body)
	}
}

// errorText returns the "error" of a JSON error body.
func (r adminResponse) errorText(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.decode(t, &e)
	if e.Error == "" {
		t.Fatalf("error response without an error message: %q", r.body)
	}
	return e.Error
}

func adminDo(t *testing.T, method, target, body string) adminResponse {
	t.Helper()
	var req *http.Request
	if body == "" {
		req = httptest.NewRequest(method, target, nil)
	} else {
		req = httptest.NewRequest(method, target, strings.NewReader(body))
	}
	rec := httptest.NewRecorder()
	adminMux().ServeHTTP(rec, req)
	return adminResponse{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

func adminExpect(t *testing.T, method, target, body string, status int) adminResponse {
	t.Helper()
	res := adminDo(t, method, target, body)
	if res.status != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, target, res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); status != http.StatusNoContent && ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, want application/json", method, target, ct)
	}
	return res
}

func mustStore(t *testing.T, h *tableHandle, key, server string) {
	t.Helper()
	if _, err := h.table.Store(key, server); err != nil {
		t.Fatalf("store %s -> %s: %v", key, server, err)
	}
}

func TestAdminModule(t *testing.T) {
	info, err := caddy.GetModule("admin.api.sticky")
	if err != nil {
		t.Fatal(err)
	}
	router, ok := info.New().(caddy.AdminRouter)
	if !ok {
		t.Fatalf("%T is not an AdminRouter", info.New())
	}
	routes := router.Routes()
	if len(routes) != 1 || routes[0].Pattern != "/sticky/" || routes[0].Handler == nil {
		t.Fatalf("routes %+v, want one handler for /sticky/", routes)
	}
}

func TestAdminListTables(t *testing.T) {
	ip := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP, Size: 1000, Expire: 10 * time.Minute}, "cluster")
	str := adminTable(t, "sessions", sticktable.Config{Type: sticktable.KeyString, Len: 16, NoPurge: true}, "")
	adminPublish(t, str, ip)

	mustStore(t, ip, "10.0.0.1", "a:80")
	mustStore(t, ip, "10.0.0.2", "b:80")
	ip.table.Match("10.0.0.1")  // hit
	ip.table.Match("10.9.9.9")  // miss
	ip.table.Match("not an ip") // invalid

	var got []tableInfo
	adminExpect(t, "GET", "/sticky/tables", "", 200).decode(t, &got)
	if len(got) != 2 {
		t.Fatalf("got %d tables, want 2: %+v", len(got), got)
	}
	c, s := got[0], got[1]
	if c.Name != "clients" || s.Name != "sessions" {
		t.Fatalf("tables not sorted by name: %s, %s", c.Name, s.Name)
	}
	want := tableInfo{Name: "clients", Type: "ip", Size: 1000, Used: 2, Expire: "10m0s", Peers: "cluster",
		Stats: tableStats{Hits: 1, Misses: 1, Invalid: 1, Stores: 2}}
	if c != want {
		t.Errorf("clients:\n got %+v\nwant %+v", c, want)
	}
	if s.Type != "string" || s.Len != 16 || !s.NoPurge || s.Size != sticktable.DefaultSize ||
		s.Expire != "30m0s" || s.Used != 0 || s.Peers != "" {
		t.Errorf("sessions: %+v", s)
	}

	// The raw JSON uses the documented snake_case names.
	res := adminExpect(t, "GET", "/sticky/tables", "", 200)
	for _, field := range []string{`"name":"clients"`, `"type":"ip"`, `"size":1000`, `"used":2`, `"expire":"10m0s"`, `"peers":"cluster"`, `"hits":1`, `"evictions":0`, `"len":16`} {
		if !strings.Contains(res.body, field) {
			t.Errorf("body lacks %s: %s", field, res.body)
		}
	}
	if strings.Contains(strings.SplitN(res.body, `"name":"sessions"`, 2)[0], `"len"`) {
		t.Errorf("an ip table shows a len: %s", res.body)
	}
}

func TestAdminListTablesEmpty(t *testing.T) {
	adminPublish(t)
	res := adminExpect(t, "GET", "/sticky/tables", "", 200)
	if strings.TrimSpace(res.body) != "[]" {
		t.Fatalf("body %q, want []", res.body)
	}
}

func TestAdminReadsRegistryAtRequestTime(t *testing.T) {
	h := adminMux() // built before any table exists
	adminPublish(t, adminTable(t, "first", sticktable.Config{}, ""))
	get := func() []tableInfo {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/sticky/tables", nil))
		var out []tableInfo
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := get(); len(got) != 1 || got[0].Name != "first" {
		t.Fatalf("got %+v", got)
	}
	adminPublish(t, adminTable(t, "second", sticktable.Config{}, ""))
	if got := get(); len(got) != 1 || got[0].Name != "second" {
		t.Fatalf("after a reload the API still shows %+v", got)
	}
}

func TestAdminUnknownTable(t *testing.T) {
	adminPublish(t, adminTable(t, "sessions", sticktable.Config{}, ""))
	for _, c := range []struct{ method, target, body string }{
		{"GET", "/sticky/tables/nope", ""},
		{"DELETE", "/sticky/tables/nope", ""},
		{"GET", "/sticky/tables/nope/entries/k", ""},
		{"PUT", "/sticky/tables/nope/entries/k", `{"server":"a:80"}`},
		{"DELETE", "/sticky/tables/nope/entries/k", ""},
	} {
		res := adminExpect(t, c.method, c.target, c.body, 404)
		if msg := res.errorText(t); !strings.Contains(msg, `"nope"`) || !strings.Contains(msg, `"sessions"`) {
			t.Errorf("%s %s: error %q should name the missing and the known tables", c.method, c.target, msg)
		}
	}
}

// fill stores n IPv4 keys 10.0.x.y, alternating servers a and b.
func fill(t *testing.T, h *tableHandle, n int) []string {
	t.Helper()
	var keys []string
	for i := range n {
		k := fmt.Sprintf("10.0.%d.%d", i/200, i%200+1)
		server := "a:80"
		if i%2 == 1 {
			server = "b:80"
		}
		mustStore(t, h, k, server)
		keys = append(keys, k)
	}
	return keys
}

func TestAdminShowPaging(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	keys := fill(t, h, 250)
	// The API pages in numeric address order, not text order.
	slices.SortFunc(keys, func(a, b string) int {
		return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b))
	})

	var seen []string
	after := ""
	for pages := 1; ; pages++ {
		target := "/sticky/tables/clients?limit=100"
		if after != "" {
			target += "&after=" + url.QueryEscape(after)
		}
		var page entryPage
		adminExpect(t, "GET", target, "", 200).decode(t, &page)
		for _, e := range page.Entries {
			seen = append(seen, e.Key)
		}
		wantLen, wantMore := 100, true
		if pages == 3 {
			wantLen, wantMore = 50, false
		}
		if len(page.Entries) != wantLen || page.More != wantMore {
			t.Fatalf("page %d: %d entries, more=%v; want %d, %v", pages, len(page.Entries), page.More, wantLen, wantMore)
		}
		if !page.More {
			if page.Next != "" {
				t.Fatalf("last page has next %q", page.Next)
			}
			break
		}
		if last := page.Entries[len(page.Entries)-1].Key; page.Next != last {
			t.Fatalf("next %q, want the page's last key %q", page.Next, last)
		}
		after = page.Next
	}
	if !slices.Equal(seen, keys) {
		t.Fatalf("paging returned %d keys, not every key once in order:\n got %v\nwant %v", len(seen), seen, keys)
	}

	// Without a limit a page holds the default 100.
	var page entryPage
	adminExpect(t, "GET", "/sticky/tables/clients", "", 200).decode(t, &page)
	if len(page.Entries) != defaultLimit || !page.More || page.Next != keys[defaultLimit-1] {
		t.Fatalf("default page: %d entries, more=%v, next=%q", len(page.Entries), page.More, page.Next)
	}
}

func TestAdminShowFilters(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	fill(t, h, 40)

	var page entryPage
	adminExpect(t, "GET", "/sticky/tables/clients?server=b:80&limit=1000", "", 200).decode(t, &page)
	if len(page.Entries) != 20 || page.More {
		t.Fatalf("server filter: %d entries (more=%v), want 20", len(page.Entries), page.More)
	}
	for _, e := range page.Entries {
		if e.Server != "b:80" {
			t.Fatalf("server filter let through %+v", e)
		}
	}

	// An IPv4-mapped spelling finds the same entry.
	for _, k := range []string{"10.0.0.5", "::ffff:10.0.0.5"} {
		page = entryPage{}
		adminExpect(t, "GET", "/sticky/tables/clients?key="+url.QueryEscape(k), "", 200).decode(t, &page)
		if len(page.Entries) != 1 || page.Entries[0].Key != "10.0.0.5" || page.Entries[0].Server != "a:80" {
			t.Fatalf("key=%s: %+v", k, page)
		}
	}
	page = entryPage{}
	adminExpect(t, "GET", "/sticky/tables/clients?key=10.0.0.5&server=b:80", "", 200).decode(t, &page)
	if len(page.Entries) != 0 {
		t.Fatalf("key and server filters should both apply: %+v", page)
	}
	res := adminExpect(t, "GET", "/sticky/tables/clients?key=10.9.9.9", "", 200)
	if strings.TrimSpace(res.body) != `{"entries":[],"more":false}` {
		t.Fatalf("absent key: body %s", res.body)
	}
}

func TestAdminShowBadRequests(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	for _, q := range []string{
		"limit=0", "limit=-1", "limit=abc", "limit=10001", "limit=",
		"key=not-an-ip", "key=2001:db8::1", "after=garbage",
		"sever=a:80", "limit=5&limit=6", "key=%zz",
	} {
		res := adminExpect(t, "GET", "/sticky/tables/clients?"+q, "", 400)
		res.errorText(t)
	}
	res := adminExpect(t, "GET", "/sticky/tables/clients?key=not-an-ip", "", 400)
	if msg := res.errorText(t); !strings.Contains(msg, "not a valid ip key") {
		t.Errorf("bad key error %q does not say why", msg)
	}
	adminExpect(t, "GET", "/sticky/tables/clients?limit=10000", "", 200)
}

func TestAdminPinThenShow(t *testing.T) {
	h := adminTable(t, "v6", sticktable.Config{Type: sticktable.KeyIPv6, Expire: 30 * time.Minute}, "")
	adminPublish(t, h)

	// IPv6 keys go into the path as they are: ':' is fine in a segment.
	var pinned entryInfo
	adminExpect(t, "PUT", "/sticky/tables/v6/entries/2001:db8::1", `{"server": "[2001:db8::11]:8080"}`, 200).decode(t, &pinned)
	want := entryInfo{
		Key:       "2001:db8::1",
		Server:    "[2001:db8::11]:8080",
		ExpiresIn: (30 * time.Minute).Milliseconds(),
		UpdatedBy: "node1",
		UpdatedAt: adminClock.Format(time.RFC3339Nano),
	}
	if pinned != want {
		t.Fatalf("pin answered\n %+v\nwant %+v", pinned, want)
	}
	if e, ok := h.table.Get("2001:db8::1"); !ok || e.Server != want.Server {
		t.Fatalf("the table has %+v, %v after the pin", e, ok)
	}

	// A non-canonical spelling (escaped, even) reaches the same entry.
	var one entryInfo
	adminExpect(t, "GET", "/sticky/tables/v6/entries/2001%3A0db8%3A0%3A0%3A0%3A0%3A0%3A1", "", 200).decode(t, &one)
	if one != want {
		t.Fatalf("GET entry: %+v", one)
	}
	var page entryPage
	adminExpect(t, "GET", "/sticky/tables/v6", "", 200).decode(t, &page)
	if len(page.Entries) != 1 || page.Entries[0] != want {
		t.Fatalf("show after pin: %+v", page)
	}

	// Pinning again moves the key.
	adminExpect(t, "PUT", "/sticky/tables/v6/entries/2001:db8::1", `{"server":"[2001:db8::12]:8080"}`, 200).decode(t, &pinned)
	if pinned.Server != "[2001:db8::12]:8080" {
		t.Fatalf("re-pin: %+v", pinned)
	}
	if e, _ := h.table.Get("2001:db8::1"); e.Server != "[2001:db8::12]:8080" {
		t.Fatalf("re-pin not applied: %+v", e)
	}

	adminExpect(t, "GET", "/sticky/tables/v6/entries/2001:db8::2", "", 404)
	adminExpect(t, "GET", "/sticky/tables/v6/entries/fe80::1%25eth0", "", 400) // zones name interfaces, not clients
}

// TestAdminPinIdentityCap: a server identity is capped (it was accepted at
// 64 KB before): the longest allowed is stored, one byte more is refused
// with a message giving the limit.
func TestAdminPinIdentityCap(t *testing.T) {
	h := adminTable(t, "ids", sticktable.Config{Type: sticktable.KeyString}, "")
	adminPublish(t, h)
	longest := strings.Repeat("s", sticktable.MaxServerLen)
	adminExpect(t, "PUT", "/sticky/tables/ids/entries/a", `{"server": "`+longest+`"}`, 200)
	res := adminExpect(t, "PUT", "/sticky/tables/ids/entries/b", `{"server": "`+longest+`x"}`, 400)
	if msg := res.errorText(t); !strings.Contains(msg, "1024") {
		t.Errorf("message %q does not give the limit", msg)
	}
	if _, ok := h.table.Get("b"); ok {
		t.Error("an over-long identity was stored")
	}
}

func TestAdminPinErrors(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	full := adminTable(t, "full", sticktable.Config{Type: sticktable.KeyInteger, Size: 1, NoPurge: true}, "")
	adminPublish(t, h, full)
	const target = "/sticky/tables/clients/entries/10.0.0.1"
	for _, c := range []struct {
		body   string
		status int
	}{
		{"", 400},
		{"not json", 400},
		{`{"server": 5}`, 400},
		{`{}`, 400},
		{`{"server": ""}`, 400},
		{`{"server": "   "}`, 400},
		{`{"server": " a:80"}`, 400},
		{`{"srever": "a:80"}`, 400},
		{`{"server": "a:80"} {"server": "b:80"}`, 400},
		{`{"server": "a:80"} x`, 400},
		{`["a:80"]`, 400},
		{`{"server": "` + strings.Repeat("x", maxBodyBytes) + `"}`, 413},
		{`{"server": "` + strings.Repeat("x", sticktable.MaxServerLen+1) + `"}`, 400},
	} {
		res := adminExpect(t, "PUT", target, c.body, c.status)
		res.errorText(t)
	}
	if h.table.Len() != 0 {
		t.Fatalf("a refused pin stored something: %d entries", h.table.Len())
	}
	res := adminExpect(t, "PUT", "/sticky/tables/clients/entries/10.0.0.300", `{"server":"a:80"}`, 400)
	if msg := res.errorText(t); !strings.Contains(msg, "10.0.0.300") {
		t.Errorf("bad key error %q does not name the key", msg)
	}
	// Admin typos are not traffic: they must not count as invalid lookups.
	if st := h.table.Stats(); st.Invalid != 0 || st.Empty != 0 {
		t.Errorf("a bad key at the admin API counted in the table's stats: %+v", st)
	}

	adminExpect(t, "PUT", "/sticky/tables/full/entries/1", `{"server":"a:80"}`, 200)
	adminExpect(t, "PUT", "/sticky/tables/full/entries/2", `{"server":"a:80"}`, 507)
	adminExpect(t, "PUT", "/sticky/tables/full/entries/1", `{"server":"b:80"}`, 200) // existing keys still move
}

func TestAdminKeysWithSlashesAndSpaces(t *testing.T) {
	h := adminTable(t, "sessions", sticktable.Config{Type: sticktable.KeyString, Len: 64}, "")
	adminPublish(t, h)
	keys := []string{"a/b c", "100%", "/leading", "trailing/", "..", ".", "x?y#z", "ünï"}
	for _, k := range keys {
		target := "/sticky/tables/sessions/entries/" + pathSegment(k)
		var e entryInfo
		adminExpect(t, "PUT", target, `{"server":"a:80"}`, 200).decode(t, &e)
		if e.Key != k {
			t.Fatalf("PUT %s stored key %q, want %q", target, e.Key, k)
		}
		if _, ok := h.table.Get(k); !ok {
			t.Fatalf("key %q not in the table after PUT %s", k, target)
		}
		adminExpect(t, "GET", target, "", 200).decode(t, &e)
		if e.Key != k {
			t.Fatalf("GET %s: key %q", target, e.Key)
		}
	}
	var page entryPage
	adminExpect(t, "GET", "/sticky/tables/sessions?key="+url.QueryEscape("a/b c"), "", 200).decode(t, &page)
	if len(page.Entries) != 1 || page.Entries[0].Key != "a/b c" {
		t.Fatalf("key filter with a slash: %+v", page)
	}
	for _, k := range keys {
		var res map[string]bool
		adminExpect(t, "DELETE", "/sticky/tables/sessions/entries/"+pathSegment(k), "", 200).decode(t, &res)
		if !res["deleted"] {
			t.Fatalf("DELETE %q: %v", k, res)
		}
	}
	if n := h.table.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
	// An unescaped slash is a path separator, never part of a key.
	adminExpect(t, "PUT", "/sticky/tables/sessions/entries/a/b", `{"server":"a:80"}`, 404)
}

func TestAdminDeleteEntry(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	mustStore(t, h, "10.0.0.1", "a:80")
	mustStore(t, h, "10.0.0.2", "a:80")

	res := adminExpect(t, "DELETE", "/sticky/tables/clients/entries/10.0.0.1", "", 200)
	if strings.TrimSpace(res.body) != `{"deleted":true}` {
		t.Fatalf("body %s", res.body)
	}
	if _, ok := h.table.Get("10.0.0.1"); ok {
		t.Fatal("key still there")
	}
	if _, ok := h.table.Get("10.0.0.2"); !ok {
		t.Fatal("delete removed another key")
	}
	res = adminExpect(t, "DELETE", "/sticky/tables/clients/entries/10.0.0.1", "", 200)
	if strings.TrimSpace(res.body) != `{"deleted":false}` {
		t.Fatalf("second delete: body %s", res.body)
	}
	adminExpect(t, "DELETE", "/sticky/tables/clients/entries/bogus", "", 400)
	adminExpect(t, "DELETE", "/sticky/tables/clients/entries/10.0.0.2?server=a:80", "", 400)
}

func TestAdminClear(t *testing.T) {
	h := adminTable(t, "clients", sticktable.Config{Type: sticktable.KeyIP}, "")
	adminPublish(t, h)
	fill(t, h, 30)
	mustStore(t, h, "192.168.0.1", "c:80")

	var res struct {
		Cleared int    `json:"cleared"`
		Server  string `json:"server"`
	}
	adminExpect(t, "DELETE", "/sticky/tables/clients?server=a:80", "", 200).decode(t, &res)
	if res.Cleared != 15 || res.Server != "a:80" {
		t.Fatalf("clear by server: %+v, want 15 of a:80", res)
	}
	for _, s := range h.table.Servers() {
		if s.Server == "a:80" && s.Entries > 0 {
			t.Fatalf("a:80 still has %d entries", s.Entries)
		}
	}
	if n := h.table.Len(); n != 16 {
		t.Fatalf("%d entries left, want the 16 of b:80 and c:80", n)
	}

	// An empty server is refused rather than taken as "everything".
	adminExpect(t, "DELETE", "/sticky/tables/clients?server=", "", 400)
	adminExpect(t, "DELETE", "/sticky/tables/clients?servers=b:80", "", 400)
	if n := h.table.Len(); n != 16 {
		t.Fatalf("a refused clear removed entries: %d left", n)
	}

	res.Cleared, res.Server = 0, ""
	adminExpect(t, "DELETE", "/sticky/tables/clients", "", 200).decode(t, &res)
	if res.Cleared != 16 || res.Server != "" {
		t.Fatalf("clear: %+v, want 16", res)
	}
	if n := h.table.Len(); n != 0 {
		t.Fatalf("%d entries after clear", n)
	}
}

func TestAdminMethodsAndUnknownPaths(t *testing.T) {
	adminPublish(t, adminTable(t, "t", sticktable.Config{}, ""))
	for _, c := range []struct{ method, target, allow string }{
		{"POST", "/sticky/tables", "GET"},
		{"DELETE", "/sticky/tables", "GET"},
		{"PUT", "/sticky/tables/t", "GET, DELETE"},
		{"POST", "/sticky/tables/t/entries/k", "GET, PUT, DELETE"},
		{"PATCH", "/sticky/tables/t/entries/k", "GET, PUT, DELETE"},
		{"PUT", "/sticky/servers/a:80/drain", "GET, POST, DELETE"},
		{"POST", "/sticky/peers", "GET"},
		{"POST", "/sticky/servers", "GET"},
		{"DELETE", "/sticky/cookie?server=a:80", "GET"},
	} {
		res := adminExpect(t, c.method, c.target, "", 405)
		if got := res.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.target, got, c.allow)
		}
		res.errorText(t)
	}
	res := adminExpect(t, "OPTIONS", "/sticky/tables/t/entries/k", "", 204)
	if got := res.header.Get("Allow"); got != "GET, PUT, DELETE" {
		t.Errorf("OPTIONS: Allow %q", got)
	}
	for _, p := range []string{
		"/sticky/", "/sticky/nope", "/sticky/tables/t/entries", "/sticky/tables/t/keys/k",
		"/sticky/tables/t/entries/k/extra", "/sticky/servers/a:80", "/sticky/servers/a:80/undrain",
	} {
		adminExpect(t, "GET", p, "", 404).errorText(t)
	}
	// Paths are exact: a trailing slash is another path.
	adminExpect(t, "GET", "/sticky/tables/", "", 404)
	adminExpect(t, "DELETE", "/sticky/tables/t/", "", 404)
	adminExpect(t, "GET", "/sticky/tables?x=1", "", 400)
}

// TestAdminOddRequestsNeverFail500 sends malformed and surprising requests:
// each must get a JSON answer in the 2xx or 4xx range, never a panic or 500.
func TestAdminOddRequestsNeverFail500(t *testing.T) {
	adminPublish(t,
		adminTable(t, "s", sticktable.Config{}, ""),
		adminTable(t, "i", sticktable.Config{Type: sticktable.KeyInteger}, ""),
		adminTable(t, "b", sticktable.Config{Type: sticktable.KeyBinary, Len: 4}, ""),
	)
	segs := []string{"", "%00", "%2F", "%20", "%25", "..%2F..", strings.Repeat("k", 5000), "9223372036854775808", "-1", "abc", "0g", "\u00e9"}
	methods := []string{"GET", "PUT", "DELETE", "POST", "HEAD", "OPTIONS", "PATCH"}
	bodies := []string{"", `{"server":"a:80"}`, `{"server":null}`, `null`, `{"server":"\u0000"}`}
	for _, tbl := range []string{"s", "i", "b", "zz"} {
		for _, seg := range segs {
			for _, m := range methods {
				for _, body := range bodies {
					for _, target := range []string{
						"/sticky/tables/" + tbl + "/entries/" + url.PathEscape(seg),
						"/sticky/tables/" + tbl + "?key=" + url.QueryEscape(seg) + "&after=" + url.QueryEscape(seg),
						"/sticky/servers/" + url.PathEscape(seg) + "/drain",
					} {
						res := adminDo(t, m, target, body)
						if res.status >= 500 || res.status < 200 || (res.status >= 300 && res.status < 400 && res.status != http.StatusTemporaryRedirect) {
							t.Fatalf("%s %s %q: status %d: %s", m, target, body, res.status, res.body)
						}
						if m == "POST" && strings.HasPrefix(target, "/sticky/servers/") && res.status == 200 {
							var st drainState
							res.decode(t, &st)
							state.drained.Set(st.Server, false)
						}
					}
				}
			}
		}
	}
}

func TestAdminDrainRoundTrip(t *testing.T) {
	for _, addr := range []string{"[2001:db8::5]:8080", "unix//run/app.sock", "web 1"} {
		t.Run(addr, func(t *testing.T) {
			t.Cleanup(func() { state.drained.Set(addr, false) })
			target := "/sticky/servers/" + pathSegment(addr) + "/drain"
			var st drainState
			adminExpect(t, "POST", target, "", 200).decode(t, &st)
			if st.Server != addr || !st.Drained || st.Changed == nil || !*st.Changed {
				t.Fatalf("drain: %+v", st)
			}
			if !state.drained.Is(addr) {
				t.Fatal("not drained")
			}
			st = drainState{}
			adminExpect(t, "POST", target, "", 200).decode(t, &st)
			if !st.Drained || st.Changed == nil || *st.Changed {
				t.Fatalf("second drain should change nothing: %+v", st)
			}
			st = drainState{}
			adminExpect(t, "GET", target, "", 200).decode(t, &st)
			if !st.Drained || st.Changed != nil {
				t.Fatalf("status: %+v", st)
			}
			var list struct{ Drained []string }
			adminExpect(t, "GET", "/sticky/servers", "", 200).decode(t, &list)
			if !slices.Contains(list.Drained, addr) {
				t.Fatalf("drained list %v lacks %s", list.Drained, addr)
			}

			st = drainState{}
			adminExpect(t, "DELETE", target, "", 200).decode(t, &st)
			if st.Drained || st.Changed == nil || !*st.Changed {
				t.Fatalf("undrain: %+v", st)
			}
			if state.drained.Is(addr) {
				t.Fatal("still drained")
			}
			list.Drained = nil
			adminExpect(t, "GET", "/sticky/servers", "", 200).decode(t, &list)
			if slices.Contains(list.Drained, addr) {
				t.Fatalf("drained list %v still has %s", list.Drained, addr)
			}
			st = drainState{}
			adminExpect(t, "DELETE", target, "", 200).decode(t, &st)
			if st.Changed == nil || *st.Changed {
				t.Fatalf("second undrain should change nothing: %+v", st)
			}
		})
	}
	res := adminExpect(t, "GET", "/sticky/servers", "", 200)
	if !strings.Contains(res.body, `"drained":[`) {
		t.Fatalf("drained list must be an array even when empty: %s", res.body)
	}
}

func TestAdminPeers(t *testing.T) {
	res := adminExpect(t, "GET", "/sticky/peers", "", 200)
	if strings.TrimSpace(res.body) != "[]" {
		t.Fatalf("peers without replication: %s", res.body)
	}
	setPeerStatus(t, func() any { return []map[string]any{{"name": "node2", "state": "alive"}} })
	res = adminExpect(t, "GET", "/sticky/peers", "", 200)
	if strings.TrimSpace(res.body) != `[{"name":"node2","state":"alive"}]` {
		t.Fatalf("peers: %s", res.body)
	}
	setPeerStatus(t, func() any { return nil })
	if res = adminExpect(t, "GET", "/sticky/peers", "", 200); strings.TrimSpace(res.body) != "[]" {
		t.Fatalf("nil peers: %s", res.body)
	}
	setPeerStatus(t, func() any { return []map[string]any(nil) })
	if res = adminExpect(t, "GET", "/sticky/peers", "", 200); strings.TrimSpace(res.body) != "[]" {
		t.Fatalf("nil slice of peers: %s", res.body)
	}
	setPeerStatus(t, nil)
	if res = adminExpect(t, "GET", "/sticky/peers", "", 200); strings.TrimSpace(res.body) != "[]" {
		t.Fatalf("peers after setPeerStatus(t, nil): %s", res.body)
	}
}

func TestAdminCookie(t *testing.T) {
	var mu sync.Mutex
	var calls [][2]string
	routes := []selection.CookieRoute{{Cookie: "SERVERID", Value: "web1", Mode: "insert"}}
	prev := cookieRoutes
	t.Cleanup(func() { cookieRoutes = prev })
	cookieRoutes = func(server, cookie string) []selection.CookieRoute {
		mu.Lock()
		calls = append(calls, [2]string{server, cookie})
		mu.Unlock()
		if cookie == "OTHER" {
			return nil
		}
		return routes
	}

	var got []selection.CookieRoute
	adminExpect(t, "GET", "/sticky/cookie?server=10.0.0.11:8080&policy=SERVERID", "", 200).decode(t, &got)
	if !slices.Equal(got, routes) {
		t.Fatalf("got %+v", got)
	}
	adminExpect(t, "GET", "/sticky/cookie?server="+url.QueryEscape("[::1]:80"), "", 200)
	res := adminExpect(t, "GET", "/sticky/cookie?server=10.0.0.11:8080&policy=OTHER", "", 404)
	if msg := res.errorText(t); !strings.Contains(msg, "OTHER") {
		t.Errorf("404 message %q does not name the policy", msg)
	}
	adminExpect(t, "GET", "/sticky/cookie", "", 400)
	adminExpect(t, "GET", "/sticky/cookie?server=", "", 400)
	adminExpect(t, "GET", "/sticky/cookie?server=a:80&cookie=X", "", 400)

	want := [][2]string{{"10.0.0.11:8080", "SERVERID"}, {"[::1]:80", ""}, {"10.0.0.11:8080", "OTHER"}}
	if !slices.Equal(calls, want) {
		t.Fatalf("lookups %v, want %v", calls, want)
	}

	// With no policy running at all, the real lookup finds nothing.
	cookieRoutes = prev
	res = adminExpect(t, "GET", "/sticky/cookie?server=10.0.0.11:8080", "", 404)
	if msg := res.errorText(t); !strings.Contains(msg, "no sticky_cookie policy") {
		t.Errorf("message %q", msg)
	}
}

// TestAdminDotKeysNeverClearTheTable covers unescaped "." and ".." keys: the
// admin server's path cleaning turns them into the table's own path, where
// DELETE clears everything. Neither the redirect a Go client follows nor
// the trailing-slash path curl makes of it may clear the table.
func TestAdminDotKeysNeverClearTheTable(t *testing.T) {
	h := adminTable(t, "t", sticktable.Config{}, "")
	adminPublish(t, h)
	mustStore(t, h, "..", "a:80")
	mustStore(t, h, "other", "a:80")
	srv := httptest.NewServer(adminMux())
	t.Cleanup(srv.Close)

	for path, want := range map[string]int{
		"/sticky/tables/t/entries/..":   http.StatusBadRequest, // redirected to /sticky/tables/t
		"/sticky/tables/t/entries/x/..": http.StatusNotFound,   // redirected to .../entries
		"/sticky/tables/t/entries/.":    http.StatusNotFound,
	} {
		req, err := http.NewRequest("DELETE", srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("DELETE %s (redirected): status %d, want %d", path, res.StatusCode, want)
		}
		if n := h.table.Len(); n != 2 {
			t.Fatalf("DELETE %s removed entries: %d left", path, n)
		}
	}
	// The path curl sends for .../entries/.. after removing dot segments.
	adminExpect(t, "DELETE", "/sticky/tables/t/", "", 404)
	// A Referer from elsewhere, or from the same path, is no redirect.
	req := httptest.NewRequest("DELETE", "/sticky/tables/t/entries/other", nil)
	req.Header.Set("Referer", "http://localhost:2019/sticky/tables/t/entries/other")
	rec := httptest.NewRecorder()
	adminMux().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("DELETE with its own path as Referer: %d %s", rec.Code, rec.Body)
	}
	// Escaped, ".." is an ordinary key.
	adminExpect(t, "DELETE", "/sticky/tables/t/entries/%2E%2E", "", 200)
	if n := h.table.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}
