package sticky

import (
	"context"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// Caddy emits two events on a config's own events app that tell the state
// owner when to commit (state.go):
//
//   - "started", once every app of the config started (before Caddy's last
//     setup steps, which rarely fail and are then handled as a cancel);
//   - "stopping", when Caddy begins to stop a config: after a new config
//     replaced it, or on a full stop, before any of its apps stops. A
//     reload commits here, not in the old config's Stop, so that an old
//     app that takes its time to stop (an HTTP server's grace period)
//     delays nothing.
//
// Both are emitted synchronously, under Caddy's config lock.
const (
	eventStarted  = "started"
	eventStopping = "stopping"
)

// lifecycleHandler hears the lifecycle events of one plan's config.
type lifecycleHandler struct{ p *plan }

// Handle commits or retires the plan as the event says.
func (h lifecycleHandler) Handle(_ context.Context, e caddy.Event) error {
	switch e.Name() {
	case eventStarted:
		state.started(h.p)
	case eventStopping:
		state.stopping(h.p)
	}
	return nil
}

// subscribeLifecycle asks ctx's events app to tell p about its config's
// lifecycle, and reports whether it will.
func subscribeLifecycle(ctx caddy.Context, p *plan) bool {
	app, err := ctx.App("events")
	if err != nil {
		return false
	}
	ev, ok := app.(*caddyevents.App)
	if !ok {
		return false
	}
	h := lifecycleHandler{p: p}
	return ev.On(eventStarted, h) == nil && ev.On(eventStopping, h) == nil
}

var _ caddyevents.Handler = lifecycleHandler{}
