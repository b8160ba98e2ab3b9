// Package sticky is caddy-sticky: HAProxy-style session persistence for
// Caddy's reverse_proxy. Importing it registers every module of the plugin:
// the sticky_cookie and stick_table selection policies, the sticky app that
// owns stick tables across config reloads, and the admin API.
//
// Build it into Caddy with xcaddy:
//
//	xcaddy build --with github.com/caddy-sticky/sticky
package sticky

import (
	// the selection policies register themselves
	_ "github.com/caddy-sticky/sticky/selection"
)
