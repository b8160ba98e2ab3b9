// Command loadharness measures the plugin's persistence policies under
// load, side by side with stock Caddy's policies and with HAProxy, on one
// machine, in one command:
//
//	go run ./bench/loadharness -duration 5s -rounds 3 -out bench/results.md
//
// It builds Caddy with this plugin from the checkout (go build ./cmd/caddy),
// starts backends on 127.0.0.1 inside its own process, and for every
// configuration starts a proxy on a free loopback port, warms it up, loads
// it and stops it. The load comes from a population of simulated users,
// each with its own cookie jar and X-User identity, new users arriving at
// a set rate, over a fixed number of keep-alive connections. Within a
// round, the configurations of one proxy and upstream count run side by
// side and take turns in one-second slices, and rounds rotate the order,
// so drift on a shared machine spreads over all of them. The same is done
// for TCP through caddy-l4 (and HAProxy mode tcp) in connections per
// second. It then kills a backend under load (failover), fills a table
// with distinct keys (memory), and sends a million distinct users through
// a header-keyed table (scale). The result is a markdown report
// printed on stdout and written to -out; progress goes to stderr.
//
// HAProxy is measured when a haproxy binary is on PATH (-haproxy auto);
// the harness generates its configs. -smoke runs everything tiny, without
// HAProxy; smoke_test.go runs that mode as part of go test ./... .
//
// The harness lives in bench/ rather than integration/ because it is a
// tool, not a test suite: its output is a set of figures read by people,
// its runs take minutes and depend on the machine, and none of it could
// pass or fail in CI except the smoke mode, which proves the tool works.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	o := options{}
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured time per configuration and round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "load before each measurement, not counted")
	flag.DurationVar(&o.slice, "slice", time.Second, "measured time alternates between a group's configurations in slices this long")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each measures every configuration once")
	ups := flag.String("upstreams", "3,50", "comma-separated upstream counts")
	flag.IntVar(&o.concurrency, "concurrency", 32, "keep-alive connections, each sending requests back to back")
	flag.IntVar(&o.users, "users", 1000, "users present when a configuration starts")
	flag.Float64Var(&o.arrival, "arrival", 200, "new users per second (first request without cookie)")
	flag.IntVar(&o.maxUsers, "max-users", 100000, "bound on the population")
	flag.IntVar(&o.visit, "visit", 3, "requests a user sends each time it is picked")
	flag.IntVar(&o.failUsers, "fail-users", 600, "users in the failover scenario")
	flag.IntVar(&o.memKeys, "mem-keys", 100000, "distinct keys the memory scenario stores")
	flag.IntVar(&o.scaleUsers, "scale-users", 1000000, "distinct users the scale scenario sends through a header-keyed table (0: no scale scenario)")
	flag.DurationVar(&o.scaleLimit, "scale-limit", 10*time.Minute, "bound on each scale fill's time; a fill cut short reports what it stored")
	flag.IntVar(&o.scaleRounds, "scale-rounds", 0, "rounds of the scale scenario (0: as -rounds)")
	flag.BoolVar(&o.layer4, "layer4", true, "measure the layer-4 (TCP) configurations")
	flag.DurationVar(&o.settle, "settle", time.Second, "wait before each RSS reading")
	flag.StringVar(&o.haproxy, "haproxy", "auto", "auto: measure HAProxy when on PATH; on: require it; off: skip it")
	flag.StringVar(&o.caddyBin, "caddy", "", "use this Caddy binary instead of building ./cmd/caddy")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	only := flag.String("only", "", "regexp: measure only scenarios whose \"proxy/policy\" matches (round_robin always runs)")
	flag.StringVar(&storeURL, "store", "", "redis:// URL of a running Valkey/Redis: also measure stick_table on a store there")
	flag.StringVar(&storeTimeout, "store-timeout", "50ms", "the store's timeout in that scenario")
	smoke := flag.Bool("smoke", false, "tiny run of every scenario (3 upstreams, no HAProxy): checks the harness, not the figures")
	flag.Parse()

	if o.haproxy != "auto" && o.haproxy != "on" && o.haproxy != "off" {
		fmt.Fprintf(os.Stderr, "bad -haproxy %q: auto, on or off\n", o.haproxy)
		os.Exit(2)
	}
	if *smoke {
		s := smokeOptions()
		s.caddyBin, s.out = o.caddyBin, o.out
		o = s
	} else {
		if o.scaleRounds == 0 {
			o.scaleRounds = o.rounds
		}
		for _, f := range strings.Split(*ups, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "bad -upstreams %q\n", *ups)
				os.Exit(2)
			}
			o.upstreams = append(o.upstreams, n)
		}
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad -only: %v\n", err)
			os.Exit(2)
		}
		o.only = re
	}
	args := make([]string, 0, len(os.Args)-1)
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " |*?()[]{}$&;<>\\'\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	o.command = strings.Join(append([]string{"go run ./bench/loadharness"}, args...), " ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
	rep, err := run(ctx, o, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadharness:", err)
		os.Exit(1)
	}
	md := rep.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "loadharness:", err)
			os.Exit(1)
		}
	}
}
