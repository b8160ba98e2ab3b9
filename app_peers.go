package sticky

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/peers"
	"github.com/caddy-sticky/sticky/sticktable"
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

// provisionPeers starts or reuses the configured groups and checks that
// every table names one of them. It changes nothing in a group that a
// running config shares: a reload that fails after Provision must leave
// the running config as it was, so keys, attachments and detachments are
// applied in startPeers.
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
		val, _, err := groupPool.LoadOrNew(key, func() (caddy.Destructor, error) {
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
		if h.cfg.Name != cfg.Name || h.cfg.Advertise != cfg.Advertise {
			return fmt.Errorf("peers %s: a running group cannot change its node name or advertise address in a reload (it holds %s); restart Caddy to apply it", name, cfg.Bind)
		}
	}
	for name := range a.handles {
		if p := a.Tables[name].Peers; p != "" {
			if _, ok := a.groups[p]; !ok {
				return fmt.Errorf("table %s: no peer group named %q (add `peers %s { ... }` to the sticky option)", name, p, p)
			}
		}
	}
	return nil
}

// startPeers applies this config to its groups: new keys (rotation),
// tables to replicate, tables no longer replicated, drain state.
func (a *App) startPeers() error {
	for name, h := range a.groups {
		cfg := a.Peers[name]
		h.group.SetMaxClockOffset(cfg.MaxClockOffset)
		if !slices.Equal(h.cfg.Secrets, cfg.Secrets) {
			if err := h.group.SetSecrets(cfg.Secrets); err != nil {
				return fmt.Errorf("peers %s: %v", name, err)
			}
			h.cfg.Secrets = append([]string(nil), cfg.Secrets...)
			a.logger.Info("peer group keys updated", zap.String("group", name), zap.Int("keys", len(cfg.Secrets)))
		}
	}
	for name, h := range a.handles {
		if p := a.Tables[name].Peers; p != "" {
			a.groups[p].group.Attach(name, h.table)
		}
	}
	// a table that stopped naming a group stops replicating through it
	for _, gh := range a.groups {
		for _, tname := range gh.group.Tables() {
			if tname == drainTableName {
				continue
			}
			if tc, ok := a.Tables[tname]; !ok || tc.Peers != gh.name {
				gh.group.Detach(tname)
			}
		}
	}
	return a.attachDrain()
}

func (a *App) releaseGroups() {
	a.releaseDrain()
	for _, h := range a.groups {
		_, _ = groupPool.Delete(h.key)
	}
	a.groups = nil
}

// groupKey is a group's name and sockets. A reload that keeps them keeps
// the group (secrets are updated in place; join only matters when a node
// starts); one that moves the group to another bind address starts a new
// group, and the old one leaves when the old config stops. The node name
// and advertise address cannot change in a reload (provisionPeers says so):
// a new group could not bind the address the running one holds.
func groupKey(name string, cfg *peers.Config) string {
	return strings.Join([]string{name, cfg.Bind}, "\x00")
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

// drainTableName is the table, on every node, through which drain state
// replicates: one entry per drained server.
const drainTableName = "_sticky_drain"

// drainReplica mirrors the process-wide drain set into a table that the
// peer groups replicate, and mirrors remote changes back. Local changes go
// out at once through drain's observer; remote ones are picked up by a
// light poll, because the table reports only local changes.
type drainReplica struct {
	table *sticktable.Table
	stop  chan struct{}
	done  chan struct{}
}

var drainPool = caddy.NewUsagePool()

func newDrainReplica() (*drainReplica, error) {
	t, err := sticktable.New(sticktable.Config{Type: sticktable.KeyString, Len: 1024, Size: 1 << 16, Expire: 100 * 365 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	r := &drainReplica{table: t, stop: make(chan struct{}), done: make(chan struct{})}
	for _, s := range drain.List() {
		_, _ = t.Store(s, "drained")
	}
	drain.SetObserver(func(server string, drained bool) {
		if drained {
			_, _ = t.Store(server, "drained")
		} else {
			_, _ = t.Delete(server)
		}
	})
	go r.poll()
	return r, nil
}

func (r *drainReplica) poll() {
	defer close(r.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		gen := drain.Generation()
		var servers []string
		r.table.Range(func(e sticktable.Entry) bool {
			servers = append(servers, e.Key.String())
			return true
		})
		sort.Strings(servers)
		if !slices.Equal(servers, drain.List()) {
			// a local change since gen was already written to the table;
			// the next tick sees it
			drain.ReplaceIf(gen, servers)
		}
	}
}

// Destruct stops replicating drain state.
func (r *drainReplica) Destruct() error {
	drain.SetObserver(nil)
	close(r.stop)
	<-r.done
	r.table.Close()
	return nil
}

// attachDrain replicates drain state through the first group of this
// config by name: a table has one change feed, so it replicates through
// one group (instances sharing tables through several groups should list
// the same group first).
func (a *App) attachDrain() error {
	if len(a.groups) == 0 {
		return nil
	}
	if a.drain == nil {
		val, _, err := drainPool.LoadOrNew("drain", func() (caddy.Destructor, error) { return newDrainReplica() })
		if err != nil {
			return err
		}
		a.drain = val.(*drainReplica)
	}
	names := make([]string, 0, len(a.groups))
	for name := range a.groups {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		if i == 0 {
			a.groups[name].group.Attach(drainTableName, a.drain.table)
		} else {
			a.groups[name].group.Detach(drainTableName)
		}
	}
	return nil
}

func (a *App) releaseDrain() {
	if a.drain != nil {
		_, _ = drainPool.Delete("drain")
		a.drain = nil
	}
}
