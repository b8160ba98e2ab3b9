package sticky

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/peers"
	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddy-sticky/sticky/store/valkey"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the sticky app: the stick tables that stick_table policies use,
// the peer groups that replicate them, drain state and snapshots. All of it
// outlives any one config and belongs to the process's state owner (see
// state.go): a config only plans its changes in Provision, and they are
// applied once the whole config runs, so a config that Caddy rejects
// changes nothing.
//
// With zero configuration (as when a policy asks for the app in a config
// that has none) it does nothing and opens nothing.
type App struct {
	// Stick tables by name.
	Tables map[string]*TableConfig `json:"tables,omitempty"`

	// Peer groups by name: other Caddy instances this one replicates
	// tables with. A table names its group in its `peers` field.
	Peers map[string]*peers.Config `json:"peers,omitempty"`

	// Shared stores by name: a table that names one in its `store` field
	// keeps its authoritative copy there, and its local table becomes a
	// cache (exclusive with `peers`).
	Stores map[string]*StoreConfig `json:"stores,omitempty"`

	// Keep tables across full restarts: on stop, a snapshot of every table
	// (and of the drained servers) is written, and read back when a table
	// is created with no config running. Absent: no snapshot.
	Persist *PersistConfig `json:"persist,omitempty"`

	plan   *plan
	logger *zap.Logger
}

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
	// Name of the shared store that holds this table (instead of, never
	// together with, peers).
	Store string `json:"store,omitempty"`
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

// Provision validates the config and plans it against the running state:
// kept tables and groups are referenced, new ones created, nothing that
// runs is changed.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if len(a.Tables) > 0 || len(a.Peers) > 0 {
		if err := registerTableMetrics(ctx.GetMetricsRegistry()); err != nil {
			return err
		}
	}
	if len(a.Stores) > 0 {
		if err := valkey.RegisterMetrics(ctx.GetMetricsRegistry()); err != nil {
			return err
		}
	}
	var persist snapshotStore
	if a.Persist != nil {
		persist = newSnapshotStore(ctx, a.Persist)
	}
	p, err := state.plan(a, a.logger, persist)
	if err != nil {
		return err
	}
	a.plan = p
	p.events = subscribeLifecycle(ctx, p)
	return nil
}

// Start opens the sockets of new peer groups; the plan commits once the
// whole config runs (see state.go).
func (a *App) Start() error { return state.start(a.plan) }

// Stop abandons a plan that never ran, or hands over to the next config.
func (a *App) Stop() error { return state.stop(a.plan) }

// Cleanup writes the snapshot after a full stop and drops this config's
// references; a table or group nobody references any more is closed.
func (a *App) Cleanup() error {
	state.release(a.plan)
	return nil
}

// StickTable returns the named table of this config, for policies.
func (a *App) StickTable(name string) (*sticktable.Table, error) {
	if a.plan != nil {
		if u, ok := a.plan.tables[name]; ok {
			return u.h.table, nil
		}
	}
	return nil, fmt.Errorf("no stick table named %q in the sticky app (add `table %s` to the global sticky option)", name, name)
}

// Drained returns the process's drained servers, for policies.
func (a *App) Drained() *drain.Set { return state.drained }

// AddCookiePolicy records a sticky_cookie policy of this config for the
// admin API's cookie lookup.
func (a *App) AddCookiePolicy(c *selection.StickyCookie) {
	if a.plan != nil {
		state.addCookiePolicy(a.plan, c)
	}
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

// AddTablePolicy records a stick_table policy of this config for the
// status page.
func (a *App) AddTablePolicy(t *selection.StickTable) {
	if a.plan != nil {
		state.addTablePolicy(a.plan, t)
	}
}

// Interface guards
var (
	_ caddy.App                = (*App)(nil)
	_ caddy.Provisioner        = (*App)(nil)
	_ caddy.CleanerUpper       = (*App)(nil)
	_ selection.TableSource    = (*App)(nil)
	_ selection.CookieRegistry = (*App)(nil)
	_ selection.TableRegistry  = (*App)(nil)
	_ selection.BackingSource  = (*App)(nil)
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
