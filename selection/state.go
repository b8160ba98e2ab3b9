package selection

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/sticktable"
)

// TableSource is what the policies borrow from the sticky app. Tables and
// drain state outlive configs, so the policies borrow them rather than own
// them; the sticky app's state owner keeps them.
type TableSource interface {
	// StickTable returns the named table of the config being provisioned.
	StickTable(name string) (*sticktable.Table, error)
	// Drained returns the process's drained servers.
	Drained() *drain.Set
}

// CookieRegistry collects the sticky_cookie policies of a config, so the
// admin API can say which cookie routes to a server once that config runs.
type CookieRegistry interface {
	AddCookiePolicy(*StickyCookie)
}

// TableRegistry collects the stick_table policies of a config, so the
// status page can show the upstreams each one serves.
type TableRegistry interface {
	AddTablePolicy(*StickTable)
}

// stateSource is the sticky app as the policies use it.
type stateSource interface {
	TableSource
	CookieRegistry
}

// stickyState returns the sticky app of the config being provisioned
// (Caddy creates an empty one when the config has none).
func stickyState(ctx caddy.Context) (stateSource, error) {
	app, err := ctx.App("sticky")
	if err != nil {
		return nil, fmt.Errorf("getting the sticky app: %v", err)
	}
	src, ok := app.(stateSource)
	if !ok {
		return nil, fmt.Errorf("the sticky app (%T) does not provide tables", app)
	}
	return src, nil
}

// directPolicy reports whether the module being provisioned is the
// selection policy of its reverse_proxy handler itself, not the fallback
// of another policy.
func directPolicy(ctx caddy.Context) bool {
	mods := ctx.Modules()
	if len(mods) < 2 {
		return false
	}
	_, ok := mods[len(mods)-2].(*reverseproxy.Handler)
	return ok
}
