package selection

import (
	"sort"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// seenPool remembers the upstream pool a policy last selected from, for
// the status page and GET /sticky/servers: a policy learns its upstreams
// only when Select is called. Static pools (and the cached pools of
// dynamic sources) are the same slice on every request, so the hot path
// is one atomic load and a pointer comparison; a new slice costs a walk
// over it, and an allocation only when its members changed.
type seenPool struct {
	p atomic.Pointer[reverseproxy.UpstreamPool]
}

func (sp *seenPool) observe(pool reverseproxy.UpstreamPool) {
	if cur := sp.p.Load(); cur != nil && len(*cur) == len(pool) && (len(pool) == 0 || &(*cur)[0] == &pool[0]) {
		return
	}
	sp.replace(pool)
}

func (sp *seenPool) replace(pool reverseproxy.UpstreamPool) {
	if cur := sp.p.Load(); cur != nil && len(*cur) == len(pool) {
		same := true
		for i, up := range pool {
			if (*cur)[i] != up {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	p := pool
	sp.p.Store(&p)
}

func (sp *seenPool) load() reverseproxy.UpstreamPool {
	if p := sp.p.Load(); p != nil {
		return *p
	}
	return nil
}

// UpstreamState is one upstream as Caddy's reverse proxy sees it.
type UpstreamState struct {
	// Server is the upstream's dial address.
	Server string `json:"server"`
	// Available: healthy and not at its max_requests.
	Available bool `json:"available"`
	// Healthy: passes active and passive health checks (and the circuit
	// breaker, if any).
	Healthy bool `json:"healthy"`
	// Requests in flight to it, and recent failures (passive checks).
	Requests int `json:"requests"`
	Fails    int `json:"fails"`
}

// PolicyServers is the upstreams of the policies using one cookie name (or
// one table), as last seen by Select.
type PolicyServers struct {
	// Policy names the policy, e.g. "sticky_cookie SERVERID".
	Policy string `json:"policy"`
	// Cookie is the cookie's name (sticky_cookie policies).
	Cookie string `json:"cookie,omitempty"`
	// Servers are the upstreams, in pool order, each once.
	Servers []UpstreamState `json:"servers"`
}

// PolicyServersOf lists, for each of the policies (those sharing a cookie
// name, or a table, folded together), the upstreams it last selected from
// with their health. A policy that has not served a request yet lists
// none.
func PolicyServersOf(cookies []*StickyCookie, tables []*StickTable) []PolicyServers {
	byName := map[string]*PolicyServers{}
	seen := map[string]map[string]bool{}
	add := func(policy, cookie string, pool reverseproxy.UpstreamPool) {
		ps := byName[policy]
		if ps == nil {
			ps = &PolicyServers{Policy: policy, Cookie: cookie, Servers: []UpstreamState{}}
			byName[policy] = ps
			seen[policy] = map[string]bool{}
		}
		for _, up := range pool {
			if up == nil || seen[policy][up.Dial] {
				continue
			}
			seen[policy][up.Dial] = true
			st := UpstreamState{Server: up.Dial, Available: up.Available(), Healthy: up.Healthy()}
			if up.Host != nil {
				st.Requests, st.Fails = up.Host.NumRequests(), up.Host.Fails()
			}
			ps.Servers = append(ps.Servers, st)
		}
	}
	for _, s := range cookies {
		add("sticky_cookie "+s.Name, s.Name, s.seen.load())
	}
	for _, p := range tables {
		add("stick_table "+p.Table, "", p.seen.load())
	}
	out := make([]PolicyServers, 0, len(byName))
	for _, ps := range byName {
		out = append(out, *ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Policy < out[j].Policy })
	return out
}
