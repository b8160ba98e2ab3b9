package sticky

import (
	"fmt"
	"reflect"
	"sort"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/peers"
)

// groupPool holds the running peer groups by name. A reload that keeps a
// group's configuration keeps the group itself (same sockets, same
// members), so the other nodes see no leave and no join.
var groupPool = caddy.NewUsagePool()

// groupHandle is a pooled peer group.
type groupHandle struct {
	name   string
	cfg    peers.Config
	group  *peers.Group
	logger *zap.Logger
}

// Destruct leaves the cluster cleanly once no config uses the group.
func (h *groupHandle) Destruct() error {
	groups.remove(h)
	h.logger.Info("leaving peer group", zap.String("group", h.name))
	return h.group.Close()
}

// provisionPeers starts or reuses the configured groups and attaches the
// tables that name one. It runs after the tables are provisioned.
func (a *App) provisionPeers(ctx caddy.Context) error {
	a.groups = make(map[string]*groupHandle, len(a.Peers))
	names := make([]string, 0, len(a.Peers))
	for name := range a.Peers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cfg := a.Peers[name]
		if cfg == nil {
			return fmt.Errorf("peers %s: empty configuration (a secret is required)", name)
		}
		val, loaded, err := groupPool.LoadOrNew(name, func() (caddy.Destructor, error) {
			g, err := peers.NewGroup(*cfg, a.logger.Named("peers").With(zap.String("group", name)))
			if err != nil {
				return nil, err
			}
			h := &groupHandle{name: name, cfg: *cfg, group: g, logger: a.logger}
			groups.add(h)
			return h, nil
		})
		if err != nil {
			return fmt.Errorf("peers %s: %v", name, err)
		}
		h := val.(*groupHandle)
		a.groups[name] = h
		if loaded && !reflect.DeepEqual(h.cfg, *cfg) {
			// Sockets and membership belong to the running group; tearing
			// it down inside a reload would make every peer see this node
			// leave and come back, and the new config cannot bind while the
			// old one still runs.
			a.logger.Warn("peer group configuration changed; the running group keeps its settings until Caddy restarts",
				zap.String("group", name))
		}
	}
	for name, h := range a.handles {
		tc := a.Tables[name]
		if tc.Peers == "" {
			continue
		}
		gh, ok := a.groups[tc.Peers]
		if !ok {
			return fmt.Errorf("table %s: no peer group named %q (add `peers %s { ... }` to the sticky option)", name, tc.Peers, tc.Peers)
		}
		gh.group.Attach(name, h.table)
	}
	// a table that stopped naming a group stops replicating through it
	for _, gh := range a.groups {
		for _, tname := range gh.group.Tables() {
			if tc, ok := a.Tables[tname]; !ok || tc.Peers != gh.name {
				gh.group.Detach(tname)
			}
		}
	}
	return nil
}

func (a *App) releaseGroups() {
	for name := range a.groups {
		_, _ = groupPool.Delete(name)
	}
	a.groups = nil
}

// groups lists the running groups for the admin API and metrics, read at
// request time.
var groups = &groupRegistry{m: map[*groupHandle]struct{}{}}

type groupRegistry struct {
	mu sync.RWMutex
	m  map[*groupHandle]struct{}
}

func (r *groupRegistry) add(h *groupHandle) {
	r.mu.Lock()
	r.m[h] = struct{}{}
	r.mu.Unlock()
}

func (r *groupRegistry) remove(h *groupHandle) {
	r.mu.Lock()
	delete(r.m, h)
	r.mu.Unlock()
}

func (r *groupRegistry) list() []*groupHandle {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*groupHandle, 0, len(r.m))
	for h := range r.m {
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// peerGroupStatus is one group in GET /sticky/peers.
type peerGroupStatus struct {
	Group   string               `json:"group"`
	Node    string               `json:"node"`
	Address string               `json:"address"`
	Tables  []string             `json:"tables"`
	Members []peers.MemberStatus `json:"members"`
}

func peerGroupsStatus() any {
	out := []peerGroupStatus{}
	for _, h := range groups.list() {
		members := h.group.Members()
		if members == nil {
			members = []peers.MemberStatus{}
		}
		out = append(out, peerGroupStatus{
			Group:   h.name,
			Node:    h.group.Name(),
			Address: h.group.Addr(),
			Tables:  h.group.Tables(),
			Members: members,
		})
	}
	return out
}

func init() {
	setPeerStatus(peerGroupsStatus)
}
