package sticky

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/peers"
	"github.com/caddy-sticky/sticky/sticktable"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the sticky app: it owns the named stick tables that stick_table
// policies use, so that their entries outlive any one config. Tables live in
// a process-wide pool: a reload that keeps a table's name and key type keeps
// the very same table (entries and all) and applies a new size or expiry in
// place; a reload that changes its key type starts an empty one.
//
// With zero configuration (as when a policy asks for the app in a config
// that has none) it does nothing and opens nothing.
type App struct {
	// Stick tables by name.
	Tables map[string]*TableConfig `json:"tables,omitempty"`

	// Peer groups by name: other Caddy instances this one replicates
	// tables with. A table names its group in its `peers` field.
	Peers map[string]*peers.Config `json:"peers,omitempty"`

	// Keep tables across full restarts: on stop, a snapshot of every table
	// (and of the drained servers) is written, and read back when a table
	// is created at start. Absent: no snapshot.
	Persist *PersistConfig `json:"persist,omitempty"`

	handles map[string]*tableHandle
	groups  map[string]*groupHandle
	drain   *drainReplica
	cleaned atomic.Bool
	logger  *zap.Logger
	storage snapshotStore
}

// reservedPrefix starts the names of internal tables, such as the one
// that replicates drain state.
const reservedPrefix = "_sticky_"

// TableConfig is one stick table.
type TableConfig struct {
	// Key type: ip, ipv6, string, integer or binary. Default: string.
	Type string `json:"type,omitempty"`
	// Maximum key length in bytes for string and binary keys; longer keys
	// are truncated. Default: 32.
	Len int `json:"len,omitempty"`
	// Maximum number of entries. Default: 1048576.
	Size int `json:"size,omitempty"`
	// Idle lifetime of an entry, refreshed by every match and store.
	// Default: 30m.
	Expire caddy.Duration `json:"expire,omitempty"`
	// When full, refuse new keys instead of evicting the least recently
	// used entries.
	NoPurge bool `json:"nopurge,omitempty"`
	// Name of the peer group that replicates this table.
	Peers string `json:"peers,omitempty"`
}

// PersistConfig says where snapshots go.
type PersistConfig struct {
	// A file to write the snapshot to. Empty: Caddy's configured storage,
	// under the key sticky/snapshot.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "sticky",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision obtains every configured table from the pool, creating (and,
// with persist, restoring) the ones that do not exist yet.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.handles = make(map[string]*tableHandle, len(a.Tables))
	if len(a.Tables) > 0 || len(a.Peers) > 0 {
		if err := registerTableMetrics(ctx.GetMetricsRegistry()); err != nil {
			return err
		}
	}
	if a.Persist != nil {
		a.storage = newSnapshotStore(ctx, a.Persist)
	}
	var snap *snapshotFile
	loadSnap := sync.OnceValue(func() *snapshotFile {
		if a.storage == nil {
			return nil
		}
		f, err := a.storage.load()
		if err != nil {
			a.logger.Error("reading sticky snapshot; starting with empty tables", zap.Error(err))
			return nil
		}
		return f
	})

	names := make([]string, 0, len(a.Tables))
	for name := range a.Tables {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasPrefix(name, reservedPrefix) {
			return fmt.Errorf("table %s: names starting with %q are reserved for caddy-sticky's own tables", name, reservedPrefix)
		}
		tc := a.Tables[name]
		if tc == nil {
			tc = new(TableConfig)
			a.Tables[name] = tc
		}
		cfg, err := tc.tableConfig()
		if err != nil {
			return fmt.Errorf("table %s: %v", name, err)
		}
		key := poolKey(name, cfg)
		val, loaded, err := tablePool.LoadOrNew(key, func() (caddy.Destructor, error) {
			t, err := sticktable.New(cfg)
			if err != nil {
				return nil, err
			}
			h := &tableHandle{key: key, name: name, table: t, logger: a.logger}
			if snap = loadSnap(); snap != nil {
				if n, err := snap.restore(name, t); err != nil {
					a.logger.Error("restoring table from snapshot", zap.String("table", name), zap.Error(err))
				} else if n > 0 {
					a.logger.Info("restored table from snapshot", zap.String("table", name), zap.Int("entries", n))
				}
			}
			return h, nil
		})
		if err != nil {
			a.releaseHandles()
			return fmt.Errorf("table %s: %v", name, err)
		}
		h := val.(*tableHandle)
		a.handles[name] = h
		if loaded {
			if err := h.table.Reconfigure(cfg.Size, cfg.Expire); err != nil {
				a.releaseHandles()
				return fmt.Errorf("table %s: %v", name, err)
			}
			h.table.SetNoPurge(cfg.NoPurge)
		} else if prev := registry.get(name); prev != nil && prev != h {
			a.logger.Warn("table key type changed: the new table starts empty and the old one is dropped when the previous config stops",
				zap.String("table", name),
				zap.String("old_type", prev.table.Config().Type.String()),
				zap.String("new_type", cfg.Type.String()),
				zap.Int("dropped_entries", prev.table.Len()))
		}
		h.peers = tc.Peers
	}
	if snap = loadSnap(); snap != nil && !drainRestored.Swap(true) {
		restoreDrain(snap)
	}
	if err := a.provisionPeers(ctx); err != nil {
		a.releaseGroups()
		a.releaseHandles()
		return err
	}
	return nil
}

// Start applies this config to its peer groups and publishes its tables to
// the admin API.
func (a *App) Start() error {
	if err := a.startPeers(); err != nil {
		return err
	}
	for _, name := range registry.replace(a, a.handles) {
		a.logger.Warn("table removed from the config; its entries are dropped when the previous config stops",
			zap.String("table", name))
	}
	return nil
}

// Stop writes the snapshot on a full stop. In a reload the next config has
// already started and published its tables, so this one is no longer the
// registry's owner and writes nothing.
func (a *App) Stop() error {
	if a.storage == nil || !registry.owns(a) {
		return nil
	}
	if err := a.storage.save(a.handles); err != nil {
		a.logger.Error("writing sticky snapshot", zap.Error(err))
		return nil
	}
	a.logger.Info("wrote sticky snapshot", zap.Int("tables", len(a.handles)))
	return nil
}

// Cleanup drops this config's references; a table nobody references any
// more is closed.
func (a *App) Cleanup() error {
	a.cleaned.Store(true)
	registry.forget(a)
	a.releaseGroups()
	a.releaseHandles()
	return nil
}

func (a *App) releaseHandles() {
	for _, h := range a.handles {
		_, _ = tablePool.Delete(h.key)
	}
	a.handles = nil
}

// StickTable returns the named table of this config, for policies.
func (a *App) StickTable(name string) (*sticktable.Table, error) {
	h, ok := a.handles[name]
	if !ok {
		return nil, fmt.Errorf("no stick table named %q in the sticky app (add `table %s` to the global sticky option)", name, name)
	}
	return h.table, nil
}

func (tc *TableConfig) tableConfig() (sticktable.Config, error) {
	var cfg sticktable.Config
	typ := tc.Type
	if typ == "" {
		typ = "string"
	}
	kt, err := sticktable.ParseKeyType(typ)
	if err != nil {
		return cfg, err
	}
	cfg.Type = kt
	if tc.Len != 0 && !kt.HasLen() {
		return cfg, fmt.Errorf("len applies to string and binary keys, not %s", typ)
	}
	cfg.Len = tc.Len
	if tc.Size < 0 {
		return cfg, fmt.Errorf("size must be positive")
	}
	cfg.Size = tc.Size
	if tc.Expire < 0 {
		return cfg, fmt.Errorf("expire must be positive")
	}
	cfg.Expire = time.Duration(tc.Expire)
	cfg.NoPurge = tc.NoPurge
	return cfg, nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
