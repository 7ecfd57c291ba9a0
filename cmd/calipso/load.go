package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// apiClient is one browser session of the compat API: a cookie jar, Django's CSRF
// dance (the csrftoken cookie echoed as X-CSRFToken) and JSON bodies.
type apiClient struct {
	base *url.URL // ends with the base path's "/"
	hc   *http.Client
}

func newAPIClient(base string, timeout time.Duration) (*apiClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q: want http(s)://host:port/base-path/", base)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	jar, _ := cookiejar.New(nil)
	return &apiClient{base: u, hc: &http.Client{Jar: jar, Timeout: timeout}}, nil
}

// call sends method to path (relative to the base) and returns the status and body.
func (c *apiClient) call(ctx context.Context, method, path string, body any) (int, []byte, error) {
	u := c.base.ResolveReference(&url.URL{Path: strings.TrimPrefix(path, "/")})
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == "csrftoken" {
			req.Header.Set("X-CSRFToken", ck.Value)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

// login gets a CSRF cookie the way the frontend does (any GET) and logs in.
func (c *apiClient) login(ctx context.Context, user, password string) error {
	if status, _, err := c.call(ctx, http.MethodGet, "settings/", nil); err != nil || status != http.StatusOK {
		return fmt.Errorf("login %s: settings/: status %d: %w", user, status, err)
	}
	status, body, err := c.call(ctx, http.MethodPost, "login/", map[string]string{"username": user, "password": password})
	if err != nil {
		return fmt.Errorf("login %s: %w", user, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("login %s: status %d: %s", user, status, bytes.TrimSpace(body))
	}
	return nil
}

// sessionRefs lists the "proposal~session" refs of the user's experiments (first page).
func (c *apiClient) sessionRefs(ctx context.Context, user string) ([]string, error) {
	status, body, err := c.call(ctx, http.MethodGet, "users/"+url.PathEscape(user)+"/experiments/", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("experiments of %s: status %d: %s", user, status, bytes.TrimSpace(body))
	}
	var page struct {
		Results []struct {
			ProposalID string `json:"proposal_id"`
			Sessions   []struct {
				SessionNumber string `json:"session_number"`
			} `json:"sessions"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("experiments of %s: %w", user, err)
	}
	var refs []string
	for _, e := range page.Results {
		for _, s := range e.Sessions {
			refs = append(refs, e.ProposalID+"~"+s.SessionNumber)
		}
	}
	return refs, nil
}

// containerRecord is what the API answers for a resource (the fields the tools use).
type containerRecord struct {
	Name       string `json:"container_name"`
	Status     string `json:"container_status"`
	Experiment string `json:"calipso_experiment"`
	PublicName string `json:"public_name"`
	HostPort   string `json:"host_port"`
}

// launchPath, stopPath and removePath are the compat API's resource calls.
func launchPath(user, ref, image string) string {
	return "resource/run/" + url.PathEscape(user) + "/" + url.PathEscape(ref) + "/" + url.PathEscape(image) + "/"
}

func stopPath(user, name, image string) string {
	return "resource/stop/" + url.PathEscape(user) + "/" + url.PathEscape(name) + "/" + url.PathEscape(image) + "/"
}

func removePath(user, name, image string) string {
	return "resource/rm/" + url.PathEscape(user) + "/" + url.PathEscape(name) + "/" + url.PathEscape(image) + "/"
}

// loadConfig is what `calipso load` was asked to do.
type loadConfig struct {
	base        string
	users       [][2]string // username, password
	concurrency int
	duration    time.Duration
	requests    int // 0: until duration
	mix         [3]int
	image       string
	timeout     time.Duration
}

// Operation names, in report order.
const (
	opLogin   = "login"
	opRead    = "read"
	opLaunch  = "launch"
	opRemoval = "removal" // stop then rm, as the frontend does
	opCleanup = "cleanup"
)

// maxDuration bounds a run whatever the flags say: the tool never runs unattended forever.
const maxDuration = time.Hour

func parseLoadFlags(args []string, stderr io.Writer) (loadConfig, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8000/calipsoplus-services/", "base URL of the API, base path included (loopback only)")
	users := fs.String("users", "", "user1:pass1,user2:pass2 (or --user-prefix)")
	prefix := fs.String("user-prefix", "", "users PREFIX1..PREFIXn (with --user-count and --password)")
	count := fs.Int("user-count", 1, "number of users with --user-prefix")
	password := fs.String("password", "", "password of --user-prefix users; {user} is replaced by the username")
	concurrency := fs.Int("concurrency", 4, "concurrent clients (spread over the users)")
	duration := fs.Duration("duration", 10*time.Second, "how long to run (at most 1h)")
	requests := fs.Int("requests", 0, "stop after this many operations in all (0: run for --duration)")
	mix := fs.String("mix", "8,1,1", "relative weights of reads,launches,removals")
	image := fs.String("image", "base_image", "public name of the image to launch")
	timeout := fs.Duration("timeout", 5*time.Minute, "per-request timeout (launches wait for the engine)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: calipso load [flags]\n\nLogs users in and drives reads, launches and removals against a server; prints\nthroughput, latency percentiles and errors per operation.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return loadConfig{}, err
	}
	if fs.NArg() > 0 {
		return loadConfig{}, fmt.Errorf("load: unexpected arguments %q", fs.Args())
	}
	cfg := loadConfig{base: *base, concurrency: *concurrency, duration: *duration, requests: *requests, image: *image, timeout: *timeout}
	u, err := url.Parse(cfg.base)
	if err != nil || u.Hostname() == "" {
		return cfg, fmt.Errorf("load: --url %q is not a URL", cfg.base)
	}
	if !isLoopback(u.Hostname()) {
		return cfg, fmt.Errorf("load: --url %q: only loopback servers may be loaded (localhost, 127.0.0.0/8, ::1)", cfg.base)
	}
	switch {
	case *users != "" && *prefix != "":
		return cfg, errors.New("load: give --users or --user-prefix, not both")
	case *users != "":
		for _, pair := range strings.Split(*users, ",") {
			name, pass, ok := strings.Cut(strings.TrimSpace(pair), ":")
			if !ok || name == "" {
				return cfg, fmt.Errorf("load: --users entry %q: want user:password", pair)
			}
			cfg.users = append(cfg.users, [2]string{name, pass})
		}
	case *prefix != "":
		if *count < 1 || *count > 10000 {
			return cfg, errors.New("load: --user-count must be 1 to 10000")
		}
		for i := 1; i <= *count; i++ {
			name := *prefix + strconv.Itoa(i)
			cfg.users = append(cfg.users, [2]string{name, strings.ReplaceAll(*password, "{user}", name)})
		}
	default:
		return cfg, errors.New("load: --users or --user-prefix is required")
	}
	if cfg.concurrency < 1 || cfg.concurrency > 10000 {
		return cfg, errors.New("load: --concurrency must be 1 to 10000")
	}
	if cfg.duration <= 0 || cfg.duration > maxDuration {
		return cfg, fmt.Errorf("load: --duration must be above 0 and at most %s", maxDuration)
	}
	if cfg.requests < 0 {
		return cfg, errors.New("load: --requests must not be negative")
	}
	parts := strings.Split(*mix, ",")
	if len(parts) != 3 {
		return cfg, fmt.Errorf("load: --mix %q: want reads,launches,removals", *mix)
	}
	total := 0
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return cfg, fmt.Errorf("load: --mix %q: weights are whole numbers >= 0", *mix)
		}
		cfg.mix[i] = n
		total += n
	}
	if total == 0 {
		return cfg, errors.New("load: --mix: at least one weight must be above 0")
	}
	return cfg, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

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
	client *apiClient
	mu     sync.Mutex
	free   []string          // session refs without a resource of ours
	live   []containerRecord // resources we launched and have not removed
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

func (u *loadUser) takeLive() (containerRecord, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.live) == 0 {
		return containerRecord{}, false
	}
	r := u.live[0]
	u.live = u.live[1:]
	return r, true
}

// runLoad is `calipso load`.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseLoadFlags(args, stderr)
	if err != nil {
		return err
	}
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
	printLoadReport(stdout, stats, elapsed)
	return nil
}

func loginAll(ctx context.Context, cfg loadConfig, stats *loadStats) ([]*loadUser, error) {
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
			c, err := newAPIClient(cfg.base, cfg.timeout)
			if err != nil {
				errs[i] = err
				return
			}
			t0 := time.Now()
			err = c.login(ctx, cred[0], cred[1])
			stats.record(opLogin, time.Since(t0), 200, err)
			if err != nil {
				errs[i] = err
				return
			}
			refs, err := c.sessionRefs(ctx, cred[0])
			if err != nil {
				errs[i] = err
				return
			}
			users[i] = &loadUser{name: cred[0], client: c, free: refs}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("load: %w", err)
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

func doOperation(ctx context.Context, cfg loadConfig, u *loadUser, op string, stats *loadStats) {
	switch op {
	case opLaunch:
		ref, ok := u.takeSession()
		if !ok { // every session has a resource: the frontend would not offer a launch
			op = opRead
			break
		}
		t0 := time.Now()
		status, body, err := u.client.call(ctx, http.MethodGet, launchPath(u.name, ref, cfg.image), nil)
		stats.record(opLaunch, time.Since(t0), status, err)
		var rec containerRecord
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
		status, err := removeResource(ctx, u.client, u.name, rec)
		stats.record(opRemoval, time.Since(t0), status, err)
		u.putSession(rec.Experiment)
		return
	}
	path := fmt.Sprintf(readPaths[rand.IntN(len(readPaths))], url.PathEscape(u.name))
	t0 := time.Now()
	status, _, err := u.client.call(ctx, http.MethodGet, path, nil)
	stats.record(opRead, time.Since(t0), status, err)
}

// removeResource stops then removes, as the frontend does; the status is the first
// failure's, or the removal's.
func removeResource(ctx context.Context, c *apiClient, user string, rec containerRecord) (int, error) {
	status, _, err := c.call(ctx, http.MethodGet, stopPath(user, rec.Name, rec.PublicName), nil)
	if err != nil || status >= 400 {
		return status, err
	}
	status, _, err = c.call(ctx, http.MethodGet, removePath(user, rec.Name, rec.PublicName), nil)
	return status, err
}

// cleanup removes what the run launched, so that a load test leaves nothing running.
func cleanup(ctx context.Context, cfg loadConfig, users []*loadUser, stats *loadStats) {
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
				status, err := removeResource(context.WithoutCancel(ctx), u.client, u.name, rec)
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

func printLoadReport(w io.Writer, stats *loadStats, elapsed time.Duration) {
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
