package sticky

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/sticktable"
)

// drainTableName is the table, on every node, through which drain state
// replicates and persists: one entry per drained server, with the version
// of the drain, so an older drain never undoes a newer undrain.
const drainTableName = "_sticky_drain"

// drainExpire keeps a drain for good in practice (every drain renews it),
// while its lifetime still fits what snapshots and peers carry.
const drainExpire = 20 * 365 * 24 * time.Hour

// ensureDrainTableLocked creates the drain table the first time a config
// persists or replicates. From then on every drain or undrain made here is
// written to it, with a version.
func (s *stateOwner) ensureDrainTableLocked() {
	if s.drainTable != nil {
		return
	}
	t, err := sticktable.New(sticktable.Config{Type: sticktable.KeyString, Len: sticktable.MaxServerLen, Size: 1 << 16, Expire: drainExpire})
	if err != nil {
		panic("sticky: drain table: " + err.Error()) // a constant, valid config
	}
	for _, server := range s.drained.List() {
		_, _ = t.Store(server, "drained")
	}
	s.drainTable = t
	s.drained.SetObserver(func(server string, drained bool) {
		if drained {
			_, _ = t.Store(server, "drained")
		} else {
			_, _ = t.Delete(server)
		}
	})
}

// restoreDrainLocked loads the drained servers of p's snapshot. The drain
// table's own snapshot keeps each drain's version and each undrain's
// tombstone, so a node restarting from an old snapshot cannot re-drain a
// server that another node undrained meanwhile. Snapshots of the first
// format carry only a list, restored with new versions.
func (s *stateOwner) restoreDrainLocked(p *plan) {
	f := p.snap
	if f.DrainTable != nil && s.drainTable != nil {
		if _, err := s.drainTable.ReadSnapshot(bytes.NewReader(f.DrainTable)); err != nil {
			p.logger.Error("restoring drained servers from snapshot", zap.Error(err))
		}
		s.drained.Replace(drainTableServers(s.drainTable))
		return
	}
	if len(f.Drained) > 0 && len(s.drained.List()) == 0 {
		s.drained.Replace(f.Drained)
		if s.drainTable != nil {
			for _, server := range f.Drained {
				_, _ = s.drainTable.Store(server, "drained")
			}
		}
	}
}

func drainTableServers(t *sticktable.Table) []string {
	var servers []string
	t.Range(func(e sticktable.Entry) bool {
		servers = append(servers, e.Key.String())
		return true
	})
	sort.Strings(servers)
	return servers
}

// attachDrainLocked replicates drain state through the first group of p by
// name: a table has one change feed, so it replicates through one group
// (instances sharing tables through several groups should list the same
// group first).
func (s *stateOwner) attachDrainLocked(p *plan) {
	names := sortedKeys(p.groups)
	if len(names) == 0 || s.drainTable == nil {
		s.stopDrainSyncLocked()
		return
	}
	for i, name := range names {
		if i == 0 {
			p.groups[name].h.group.Attach(drainTableName, s.drainTable)
		} else {
			p.groups[name].h.group.Detach(drainTableName)
		}
	}
	if s.drainSync == nil {
		s.drainSync = startDrainSync(s)
	}
}

func (s *stateOwner) stopDrainSyncLocked() {
	if s.drainSync != nil {
		s.drainSync.stop()
		s.drainSync = nil
	}
}

// drainSync mirrors changes that peers apply to the drain table into the
// drained set. Local changes reach the table at once through the set's
// observer; remote ones are picked up by a light poll, because the table
// reports only local changes.
type drainSync struct {
	quit chan struct{}
	done chan struct{}
}

func startDrainSync(s *stateOwner) *drainSync {
	d := &drainSync{quit: make(chan struct{}), done: make(chan struct{})}
	t, set := s.drainTable, s.drained
	go func() {
		defer close(d.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-d.quit:
				return
			case <-tick.C:
			}
			gen := set.Generation()
			if servers := drainTableServers(t); !slices.Equal(servers, set.List()) {
				// a local change since gen was already written to the
				// table; the next tick sees it
				set.ReplaceIf(gen, servers)
			}
		}
	}()
	return d
}

func (d *drainSync) stop() {
	close(d.quit)
	<-d.done
}

// setDrained drains or undrains server on this instance (the drain table
// records it, so peers and the snapshot follow) and in the running
// config's drain store, if it has one, so every instance sharing the store
// learns it. It reports whether this instance's set changed; an error says
// the store did not take the change.
func (s *stateOwner) setDrained(ctx context.Context, server string, drained bool) (bool, error) {
	changed := s.drained.Set(server, drained)
	return changed, s.storeDrain(ctx, server, drained)
}

// adoptStoreDrained makes this instance's drained set the store's, change
// by change through Set, so the drain table (and through it peers and the
// snapshot) follows too: replacing the set alone would be undone by the
// peers' poll of the drain table.
func (s *stateOwner) adoptStoreDrained(servers []string) {
	want := make(map[string]bool, len(servers))
	for _, v := range servers {
		want[v] = true
	}
	for _, cur := range s.drained.List() {
		if !want[cur] {
			s.drained.Set(cur, false)
		}
	}
	for _, v := range servers {
		s.drained.Set(v, true)
	}
}
