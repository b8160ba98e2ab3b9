package sticky

import (
	"fmt"
	"slices"
	"sort"
	"strings"
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
	key    string
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
		key := groupKey(name, cfg)
		val, loaded, err := groupPool.LoadOrNew(key, func() (caddy.Destructor, error) {
			g, err := peers.NewGroup(*cfg, a.logger.Named("peers").With(zap.String("group", name)))
			if err != nil {
				return nil, err
			}
			h := &groupHandle{key: key, name: name, cfg: *cfg, group: g, logger: a.logger}
			groups.add(h)
			return h, nil
		})
		if err != nil {
			return fmt.Errorf("peers %s: %v", name, err)
		}
		h := val.(*groupHandle)
		a.groups[name] = h
		if loaded && !slices.Equal(h.cfg.Secrets, cfg.Secrets) {
			// key rotation: the running group takes the new keys in place
			if err := h.group.SetSecrets(cfg.Secrets); err != nil {
				a.releaseGroups()
				return fmt.Errorf("peers %s: %v", name, err)
			}
			h.cfg.Secrets = append([]string(nil), cfg.Secrets...)
			a.logger.Info("peer group keys updated", zap.String("group", name), zap.Int("keys", len(cfg.Secrets)))
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
	for _, h := range a.groups {
		_, _ = groupPool.Delete(h.key)
	}
	a.groups = nil
}

// groupKey is what a running group cannot change: its name, node name and
// sockets. A reload that keeps them keeps the group (secrets are updated in
// place; join only matters when a node starts); a reload that changes them
// starts a new group, and the old one leaves when the old config stops.
func groupKey(name string, cfg *peers.Config) string {
	return strings.Join([]string{name, cfg.Name, cfg.Bind, cfg.Advertise}, "\x00")
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
