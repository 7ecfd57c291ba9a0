package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/calipsoplus/calipso/internal/apiclient"
)

// Operation names, in report order.
const (
	opLogin   = "login"
	opRead    = "read"
	opLaunch  = "launch"
	opRemoval = "removal" // stop then rm, as the frontend does
	opCleanup = "cleanup"
)

// opStats collects one operation's outcomes.
type opStats struct {
	latencies []time.Duration // of successful calls
	errors    map[string]int  // by status ("409") or "network"
}

type loadStats struct {
	mu  sync.Mutex
	ops map[string]*opStats
}

func (s *loadStats) record(op string, d time.Duration, status int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ops[op]
	if st == nil {
		st = &opStats{errors: map[string]int{}}
		s.ops[op] = st
	}
	switch {
	case err != nil:
		st.errors["network"]++
	case status >= 400:
		st.errors[strconv.Itoa(status)]++
	default:
		st.latencies = append(st.latencies, d)
	}
}

// loadUser is one logged-in user's state, shared by the workers acting as them.
type loadUser struct {
	name   string
	client *apiclient.Client
	mu     sync.Mutex
	free   []string              // session refs without a resource of ours
	live   []apiclient.Container // resources we launched and have not removed
}

func (u *loadUser) takeSession() (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.free) == 0 {
		return "", false
	}
	ref := u.free[0]
	u.free = u.free[1:]
	return ref, true
}

func (u *loadUser) putSession(ref string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.free = append(u.free, ref)
}

func (u *loadUser) takeLive() (apiclient.Container, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.live) == 0 {
		return apiclient.Container{}, false
	}
	r := u.live[0]
	u.live = u.live[1:]
	return r, true
}

// drive logs the users in, runs the operations until the time or the count is up,
// removes what it launched and prints the report.
func drive(ctx context.Context, cfg config, stdout io.Writer) error {
	stats := &loadStats{ops: map[string]*opStats{}}
	users, err := loginAll(ctx, cfg, stats)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "load: %d users logged in; %d clients for %s (or %d operations), mix reads,launches,removals = %d,%d,%d\n",
		len(users), cfg.concurrency, cfg.duration, cfg.requests, cfg.mix[0], cfg.mix[1], cfg.mix[2])

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var (
		wg     sync.WaitGroup
		issued int
		mu     sync.Mutex
	)
	next := func() bool { // bounds the run by --requests
		if cfg.requests == 0 {
			return runCtx.Err() == nil
		}
		mu.Lock()
		defer mu.Unlock()
		if issued >= cfg.requests || runCtx.Err() != nil {
			return false
		}
		issued++
		return true
	}
	start := time.Now()
	for w := range cfg.concurrency {
		u := users[w%len(users)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			for next() {
				// A launch or removal in flight finishes even when the time is up, so
				// that what it made is known and cleaned up.
				doOperation(context.WithoutCancel(runCtx), cfg, u, pick(rng, cfg.mix), stats)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cleanup(ctx, cfg, users, stats)
	printReport(stdout, stats, elapsed)
	return nil
}

func loginAll(ctx context.Context, cfg config, stats *loadStats) ([]*loadUser, error) {
	users := make([]*loadUser, len(cfg.users))
	errs := make([]error, len(cfg.users))
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, min(cfg.concurrency, 32)))
	for i, cred := range cfg.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := apiclient.New(cfg.base, cfg.timeout)
			if err != nil {
				errs[i] = err
				return
			}
			t0 := time.Now()
			err = c.Login(ctx, cred[0], cred[1])
			stats.record(opLogin, time.Since(t0), 200, err)
			if err != nil {
				errs[i] = err
				return
			}
			refs, err := c.SessionRefs(ctx, cred[0])
			if err != nil {
				errs[i] = err
				return
			}
			users[i] = &loadUser{name: cred[0], client: c, free: refs}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return users, nil
}

func pick(rng *rand.Rand, mix [3]int) string {
	n := rng.IntN(mix[0] + mix[1] + mix[2])
	switch {
	case n < mix[0]:
		return opRead
	case n < mix[0]+mix[1]:
		return opLaunch
	default:
		return opRemoval
	}
}

// readPaths are the frontend's reads of a user's page.
var readPaths = []string{"users/%s/", "users/%s/experiments/", "resource/list/%s/"}

func doOperation(ctx context.Context, cfg config, u *loadUser, op string, stats *loadStats) {
	switch op {
	case opLaunch:
		ref, ok := u.takeSession()
		if !ok { // every session has a resource: the frontend would not offer a launch
			op = opRead
			break
		}
		t0 := time.Now()
		status, body, err := u.client.Call(ctx, http.MethodGet, apiclient.LaunchPath(u.name, ref, cfg.image), nil)
		stats.record(opLaunch, time.Since(t0), status, err)
		var rec apiclient.Container
		if err == nil && status == http.StatusCreated && json.Unmarshal(body, &rec) == nil && rec.Name != "" {
			rec.Experiment, rec.PublicName = ref, cfg.image
			u.mu.Lock()
			u.live = append(u.live, rec)
			u.mu.Unlock()
			return
		}
		u.putSession(ref)
		return
	case opRemoval:
		rec, ok := u.takeLive()
		if !ok {
			op = opRead
			break
		}
		t0 := time.Now()
		status, err := u.client.Remove(ctx, u.name, rec)
		stats.record(opRemoval, time.Since(t0), status, err)
		u.putSession(rec.Experiment)
		return
	}
	path := fmt.Sprintf(readPaths[rand.IntN(len(readPaths))], url.PathEscape(u.name))
	t0 := time.Now()
	status, _, err := u.client.Call(ctx, http.MethodGet, path, nil)
	stats.record(opRead, time.Since(t0), status, err)
}

// cleanup removes what the run launched, so that a load test leaves nothing running.
func cleanup(ctx context.Context, cfg config, users []*loadUser, stats *loadStats) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, min(cfg.concurrency, 16)))
	for _, u := range users {
		for {
			rec, ok := u.takeLive()
			if !ok {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				t0 := time.Now()
				status, err := u.client.Remove(context.WithoutCancel(ctx), u.name, rec)
				stats.record(opCleanup, time.Since(t0), status, err)
			}()
		}
	}
	wg.Wait()
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func printReport(w io.Writer, stats *loadStats, elapsed time.Duration) {
	stats.mu.Lock()
	defer stats.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "load: ran %s\n", elapsed.Round(time.Millisecond))
	fmt.Fprintln(tw, "operation\tok\terrors\tper second\tp50\tp90\tp99\tmax\terrors by status\t")
	ops := make([]string, 0, len(stats.ops))
	for op := range stats.ops {
		ops = append(ops, op)
	}
	order := []string{opLogin, opRead, opLaunch, opRemoval, opCleanup}
	slices.SortFunc(ops, func(a, b string) int { return slices.Index(order, a) - slices.Index(order, b) })
	for _, op := range ops {
		st := stats.ops[op]
		lat := slices.Clone(st.latencies)
		slices.Sort(lat)
		nErr := 0
		var byStatus []string
		for k, n := range st.errors {
			nErr += n
			byStatus = append(byStatus, fmt.Sprintf("%s×%d", k, n))
		}
		sort.Strings(byStatus)
		rate := float64(len(lat)) / elapsed.Seconds()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t\n", op, len(lat), nErr, rate,
			ms(percentile(lat, .50)), ms(percentile(lat, .90)), ms(percentile(lat, .99)), ms(percentile(lat, 1)), strings.Join(byStatus, " "))
	}
	tw.Flush()
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + "ms"
}
