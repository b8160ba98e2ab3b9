package sticky

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-sticky/sticky/selection"
)

// The state the operating views read, each through one small function so
// it can be re-pointed at the app's state owner in one place.
var (
	// publishedTables returns the tables of the newest running config.
	publishedTables = func() []*tableHandle { return state.tableList() }
	// drainedServers returns the drained servers, sorted.
	drainedServers = func() []string { return state.drained.List() }
	// policyServers returns the upstreams of the running sticky_cookie and stick_table
	// policies with Caddy's health of each.
	policyServers = func() []selection.PolicyServers {
		return selection.PolicyServersOf(state.cookiePolicies(), state.tablePolicyList())
	}
)

// serverInfo is one server in GET /sticky/servers and on the status page.
type serverInfo struct {
	// Server is the identity entries store: a dial address or the name a
	// policy gives it.
	Server string `json:"server"`
	// Stuck is the number of table entries naming it, across tables.
	Stuck int `json:"stuck"`
	// Drained: no new users go there.
	Drained bool `json:"drained"`
	// LastNewUser is when a table last got a new entry naming it (RFC
	// 3339); null if never since the tables were created.
	LastNewUser *time.Time `json:"last_new_user"`
	// Tables has the entries per table, for the tables that know it.
	Tables map[string]int `json:"tables"`
	// Policies are the sticky_cookie policies whose pools hold it.
	Policies []string `json:"policies"`
}

// serversAnswer is the answer to GET /sticky/servers.
type serversAnswer struct {
	Servers []serverInfo `json:"servers"`
	// Drained lists the drained servers (as before the counts existed).
	Drained []string `json:"drained"`
}

// statusReport is everything the status page shows, gathered in one pass
// so the page, its JSON form and GET /sticky/servers agree.
type statusReport struct {
	Time     time.Time      `json:"time"`
	Tables   []tableStatus  `json:"tables"`
	Servers  []serverInfo   `json:"servers"`
	Policies []policyStatus `json:"policies"`
	Peers    any            `json:"peers"`
	Stores   []storeStatus  `json:"stores"`
	Drained  []string       `json:"drained"`
}

// storeStatus is one shared store of the running config.
type storeStatus struct {
	// Name is the store's name in the sticky app.
	Name string `json:"name"`
	// Prefix starts every key the store holds for this fleet.
	Prefix string `json:"prefix"`
	// Tables are the tables kept in it.
	Tables []string `json:"tables"`
	// BreakerOpen: the store failed repeatedly; instances decide locally
	// until it answers again.
	BreakerOpen bool `json:"breaker_open"`
	// Resyncing: reconciling local decisions with the store after an
	// outage or a lost connection.
	Resyncing bool `json:"resyncing"`
	// Calls and Invalidations count since the store client started.
	Calls         uint64 `json:"calls"`
	Invalidations uint64 `json:"invalidations"`
}

// tableStatus is a table with the figures people read off the page.
type tableStatus struct {
	tableInfo
	// HitRatio is hits / (hits + misses + expired) since the table was
	// created; null before the first lookup.
	HitRatio *float64 `json:"hit_ratio"`
}

// policyStatus is one sticky_cookie policy (by cookie name) and its
// upstreams as the reverse proxy sees them, with the sticky figures of each.
type policyStatus struct {
	Policy  string           `json:"policy"`
	Cookie  string           `json:"cookie"`
	Servers []upstreamStatus `json:"servers"`
}

type upstreamStatus struct {
	selection.UpstreamState
	Stuck       int        `json:"stuck"`
	Drained     bool       `json:"drained"`
	LastNewUser *time.Time `json:"last_new_user"`
}

// gatherStatus reads the tables' per-server counters, the drain set and
// the cookie policies' pools: no table is scanned.
func gatherStatus() statusReport {
	rep := statusReport{Time: time.Now().UTC(), Tables: []tableStatus{}, Policies: []policyStatus{}, Stores: state.storeStatuses()}
	drained := drainedServers()
	if drained == nil {
		drained = []string{}
	}
	rep.Drained = drained
	byName := map[string]*serverInfo{}
	get := func(name string) *serverInfo {
		s := byName[name]
		if s == nil {
			s = &serverInfo{Server: name, Tables: map[string]int{}, Policies: []string{}}
			byName[name] = s
		}
		return s
	}
	for _, h := range publishedTables() {
		rep.Tables = append(rep.Tables, makeTableStatus(h))
		for _, c := range h.table.ServerCounts() {
			s := get(c.Server)
			s.Stuck += c.Stuck
			s.Tables[h.name] = c.Stuck
			if !c.LastNewUser.IsZero() && (s.LastNewUser == nil || c.LastNewUser.After(*s.LastNewUser)) {
				t := c.LastNewUser.UTC()
				s.LastNewUser = &t
			}
		}
	}
	policies := policyServers()
	for _, p := range policies {
		for _, up := range p.Servers {
			s := get(up.Server)
			s.Policies = append(s.Policies, p.Policy)
		}
	}
	for _, d := range drained {
		get(d).Drained = true
	}
	for _, s := range byName {
		rep.Servers = append(rep.Servers, *s)
	}
	slices.SortFunc(rep.Servers, func(a, b serverInfo) int { return compareServers(a.Server, b.Server) })
	if rep.Servers == nil {
		rep.Servers = []serverInfo{}
	}
	for _, p := range policies {
		ps := policyStatus{Policy: p.Policy, Cookie: p.Cookie, Servers: make([]upstreamStatus, 0, len(p.Servers))}
		for _, up := range p.Servers {
			s := byName[up.Server]
			ps.Servers = append(ps.Servers, upstreamStatus{UpstreamState: up, Stuck: s.Stuck, Drained: s.Drained, LastNewUser: s.LastNewUser})
		}
		rep.Policies = append(rep.Policies, ps)
	}
	rep.Peers = peerStatus()
	return rep
}

func makeTableStatus(h *tableHandle) tableStatus {
	cfg := h.table.Config()
	st := h.table.Stats()
	ts := tableStatus{tableInfo: tableInfo{
		Name: h.name, Type: cfg.Type.String(), Len: cfg.Len, Size: cfg.Size, Used: st.Entries,
		Expire: cfg.Expire.String(), NoPurge: cfg.NoPurge, Peers: state.tablePeers(h.name),
		Stats: tableStats{
			Hits: st.Hits, Misses: st.Misses, Expired: st.Expired,
			Invalid: st.Invalid, Empty: st.Empty, Stores: st.Stores,
			Evictions: st.Evictions, Refused: st.Refused, Reaped: st.Reaped,
			Applied: st.Applied, Stale: st.Stale, Tombstones: st.Tombstones,
		},
	}}
	if n := st.Hits + st.Misses + st.Expired; n > 0 {
		r := float64(st.Hits) / float64(n)
		ts.HitRatio = &r
	}
	return ts
}

// compareServers orders names the way people count: web2 before web10,
// 10.0.0.9:80 before 10.0.0.11:80.
func compareServers(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, _ := strconv.ParseUint(a[:da], 10, 64)
			nb, _ := strconv.ParseUint(b[:db], 10, 64)
			if c := cmp.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitRun(s string) int {
	n := 0
	for n < len(s) && n < 18 && '0' <= s[n] && s[n] <= '9' {
		n++
	}
	return n
}

// listServers answers GET /sticky/servers.
func (a *AdminAPI) listServers(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryParams(r); err != nil {
		return err
	}
	rep := gatherStatus()
	return writeJSON(w, http.StatusOK, serversAnswer{Servers: rep.Servers, Drained: rep.Drained})
}

var (
	descServerStuck   = prometheus.NewDesc("caddy_sticky_server_stuck", "Table entries naming the server (users stuck to it).", []string{"table", "server"}, nil)
	descServerDrained = prometheus.NewDesc("caddy_sticky_server_drained", "1 if the server is drained (takes no new users), else 0.", []string{"server"}, nil)
	descServerLastNew = prometheus.NewDesc("caddy_sticky_server_last_new_user_timestamp_seconds", "When a table last got a new entry naming the server (Unix time).", []string{"server"}, nil)
)

var serverDescs = []*prometheus.Desc{descServerStuck, descServerDrained, descServerLastNew}

// collectServers exports the per-server gauges. Their label sets are the
// servers the tables count (bounded: live servers plus a few recently
// emptied ones per table), those in sticky_cookie pools, and the drained
// ones: never keys.
func collectServers(ch chan<- prometheus.Metric) {
	for _, h := range publishedTables() {
		for _, c := range h.table.ServerCounts() {
			ch <- prometheus.MustNewConstMetric(descServerStuck, prometheus.GaugeValue, float64(c.Stuck), h.name, c.Server)
		}
	}
	for _, s := range gatherStatus().Servers {
		v := 0.0
		if s.Drained {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descServerDrained, prometheus.GaugeValue, v, s.Server)
		if s.LastNewUser != nil {
			ch <- prometheus.MustNewConstMetric(descServerLastNew, prometheus.GaugeValue, float64(s.LastNewUser.UnixMilli())/1e3, s.Server)
		}
	}
}
