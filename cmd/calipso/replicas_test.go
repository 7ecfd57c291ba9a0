package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/apiclient"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
)

// balancer is a round-robin load balancer in front of replicas, as a client
// transport: each request goes to the next backend in the pool. The test takes a
// backend out of the pool when it kills it, as a health check would.
type balancer struct {
	mu       sync.Mutex
	backends []string // host:port
	next     int
}

func (b *balancer) set(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = backends
}

func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	b.mu.Lock()
	if len(b.backends) == 0 {
		b.mu.Unlock()
		return nil, errors.New("balancer: no backend")
	}
	backend := b.backends[b.next%len(b.backends)]
	b.next++
	b.mu.Unlock()
	r := req.Clone(req.Context())
	r.URL.Host, r.Host = backend, backend
	return http.DefaultTransport.RoundTrip(r)
}

// lbBase is the address the clients of a balancer use; the balancer rewrites it.
const lbBase = "http://calipso.lb/calipsoplus-services/"

// burstUsers are the users of a burst: crashUser and n-1 others.
func burstUsers(n int) []string {
	users := []string{crashUser}
	for i := 1; i < n; i++ {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	return users
}

func passwordOf(user string) string { return user + "-secret" } // crashPassword is ana-secret too

// loginVia logs user in through rt and opens the experiments page, as the frontend does.
func loginVia(t testing.TB, rt http.RoundTripper, base, user string) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(base, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if rt != nil {
		c.UseTransport(rt)
	}
	ctx := context.Background()
	if err := c.Login(ctx, user, passwordOf(user)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SessionRefs(ctx, user); err != nil {
		t.Fatal(err)
	}
	return c
}

// launchOutcome is what became of one launch of a burst.
type launchOutcome struct {
	user, ref string
	status    int // the last answer's; 0 when none came
	err       error
	retried   bool // the first attempt was cut (see launchUntilAnswered)
}

// burst launches crashImage on sessions s1..sN for every user: the users at once, each
// user's sessions one after another, as clicks. launched counts the answered launches
// as they come; retry says whether a request cut by a dying server is sent again.
func burst(ctx context.Context, clients map[string]*apiclient.Client, sessions int, retry bool, launched *atomic.Int64) []launchOutcome {
	var (
		mu  sync.Mutex
		out []launchOutcome
		wg  sync.WaitGroup
	)
	for user, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= sessions; i++ {
				o := launchOutcome{user: user, ref: fmt.Sprintf("%s~s%d", crashProposal, i)}
				if retry {
					o.status, o.err, o.retried = launchUntilAnswered(ctx, c, user, o.ref)
				} else {
					o.status, _, o.err = c.Call(ctx, http.MethodGet, apiclient.LaunchPath(user, o.ref, crashImage), nil)
				}
				launched.Add(1)
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// launchUntilAnswered launches, and sends the launch again when the connection was
// cut before an answer came (the server died under it), as a browser's user clicks
// again. Until the dead server's lease on the first attempt's record expires, the
// retry may be refused with 409 (the session already has a resource) or 503: it
// retries those too, after a cut only, for up to a minute.
func launchUntilAnswered(ctx context.Context, c *apiclient.Client, user, ref string) (status int, err error, retried bool) {
	deadline := time.Now().Add(time.Minute)
	for {
		status, _, err = c.Call(ctx, http.MethodGet, apiclient.LaunchPath(user, ref, crashImage), nil)
		cut := err != nil
		again := cut || (retried && (status == http.StatusConflict || status >= 500))
		if !again || time.Now().After(deadline) {
			return status, err, retried
		}
		retried = retried || cut
		select {
		case <-ctx.Done():
			return status, ctx.Err(), retried
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// convergence says what is wrong with an installation that should have settled: a
// pending record, a live record without its running container, a container without
// a live record, or a user whose used_quota differs from their live records.
func (s *liveServer) convergence(c map[string]*apiclient.Client) []string {
	s.t.Helper()
	var problems []string
	live := map[string]calipso.Resource{}
	perUser := map[string]int{}
	for _, r := range s.records() {
		switch {
		case r.State == calipso.Pending:
			problems = append(problems, fmt.Sprintf("record %d (%s) pending", r.ID, r.EngineName))
		case r.State.Live():
			live[r.EngineName] = r
			perUser[r.Username]++
		}
	}
	running := map[string]bool{}
	for _, ct := range s.containers() {
		name := strings.TrimPrefix(ct.Names[0], "/")
		running[name] = ct.State == "running"
		if _, ok := live[name]; !ok {
			problems = append(problems, fmt.Sprintf("orphan container %s (%s)", name, ct.State))
		}
	}
	for name := range live {
		if !running[name] {
			problems = append(problems, fmt.Sprintf("live record %s has no running container", name))
		}
	}
	users := make([]string, 0, len(c))
	for u := range c {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		status, body, err := c[u].Call(context.Background(), http.MethodGet, "used_quota/"+u+"/", nil)
		var used struct {
			Max json.Number `json:"max_simultaneous"`
		}
		if err != nil || status != http.StatusOK || json.Unmarshal(body, &used) != nil {
			problems = append(problems, fmt.Sprintf("used_quota of %s: %d %s %v", u, status, body, err))
		} else if used.Max.String() != fmt.Sprint(perUser[u]) {
			problems = append(problems, fmt.Sprintf("used_quota of %s = %s, live records %d", u, used.Max, perUser[u]))
		}
	}
	return problems
}

// waitConverged polls convergence until nothing is wrong or within is over.
func (s *liveServer) waitConverged(c map[string]*apiclient.Client, within time.Duration) []string {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		problems := s.convergence(c)
		if len(problems) == 0 || time.Now().After(deadline) {
			return problems
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// interrupted counts the records failed because their process let the lease expire:
// the launches that a dead process or an outage left behind.
func (s *liveServer) interrupted() int {
	s.t.Helper()
	n := 0
	for _, r := range s.records() {
		if r.State == calipso.Failed && r.Error == store.InterruptedLaunch {
			n++
		}
	}
	return n
}

// kill ends the process with SIGKILL, as a lost node does.
func (s *liveServer) kill() {
	s.t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		s.t.Fatal(err)
	}
	<-s.done
	s.cmd = nil
}

// tally counts the outcomes by answer ("201", "409", "cut"...).
func tally(outcomes []launchOutcome) map[string]int {
	n := map[string]int{}
	for _, o := range outcomes {
		switch {
		case o.err != nil:
			n["no answer"]++
		default:
			n[fmt.Sprint(o.status)]++
		}
		if o.retried {
			n["retried"]++
		}
	}
	return n
}

// TestReplicaLoss (issue 13): three replicas on one MariaDB behind a round-robin
// client take 100 launches by 20 users. One is killed with SIGKILL in the middle and
// a fresh one joins during the burst. At least 99 launches answer 201 (the client
// sends again what the kill cut), and within 30 s nothing is pending, no container
// lacks its record or the other way round, and every user's used_quota is exact.
func TestReplicaLoss(t *testing.T) {
	const users, sessions = 20, 5
	spec := serverSpec{sessions: sessions, extraUsers: burstUsers(users)[1:], mysqlDSN: testenv.MySQLDSN(t)}
	first := newServer(t, spec)
	replicas := []*liveServer{first, first.replica(), first.replica()}
	for _, r := range replicas {
		r.start()
	}
	lb := &balancer{}
	lb.set(replicas[0].addr, replicas[1].addr, replicas[2].addr)
	clients := map[string]*apiclient.Client{}
	for _, u := range burstUsers(users) {
		clients[u] = loginVia(t, lb, lbBase, u)
	}

	var launched atomic.Int64
	done := make(chan []launchOutcome, 1)
	began := time.Now()
	go func() { done <- burst(context.Background(), clients, sessions, true, &launched) }()
	for launched.Load() < 30 {
		time.Sleep(20 * time.Millisecond)
	}
	// The first replica started first: it is most likely the leader, the harder loss.
	victim := replicas[0]
	victim.kill()
	lb.set(replicas[1].addr, replicas[2].addr)
	fresh := first.replica()
	fresh.start()
	lb.set(replicas[1].addr, replicas[2].addr, fresh.addr)
	t.Logf("killed a replica after %d launches; a fresh one joined after %d", 30, launched.Load())
	outcomes := <-done
	ended := time.Now()
	counts := tally(outcomes)
	t.Logf("launches in %s: %v", ended.Sub(began).Round(100*time.Millisecond), counts)

	if counts["201"] < 99 {
		for _, o := range outcomes {
			if o.status != http.StatusCreated {
				t.Logf("%s %s: %d %v (retried %v)", o.user, o.ref, o.status, o.err, o.retried)
			}
		}
		t.Errorf("%d launches answered 201, want at least 99\nvictim's log:\n%s", counts["201"], victim.logs)
	}
	if problems := replicas[1].waitConverged(clients, 30*time.Second); len(problems) > 0 {
		t.Fatalf("30 s after the burst: %s\nlogs:\n%s\n%s\n%s", strings.Join(problems, "; "), replicas[1].logs, replicas[2].logs, fresh.logs)
	}
	t.Logf("converged %s after the burst; %d launches interrupted by the kill were taken over",
		time.Since(ended).Round(100*time.Millisecond), replicas[1].interrupted())
}

// TestDatabaseOutageDuringLaunches (issue 13): the application database is stopped
// for 30 s in the middle of 100 launches by 20 users, then started again. Within 30 s
// of its return nothing is pending, every container has its live record and the
// other way round, and every user's used_quota equals their live records.
func TestDatabaseOutageDuringLaunches(t *testing.T) {
	const users, sessions = 20, 5
	const outage = 30 * time.Second
	db := testenv.StartMariaDB(t)
	s := newServer(t, serverSpec{sessions: sessions, extraUsers: burstUsers(users)[1:], mysqlDSN: db.DSN()})
	s.start()
	clients := map[string]*apiclient.Client{}
	for _, u := range burstUsers(users) {
		clients[u] = loginVia(t, nil, s.base, u)
	}

	var launched atomic.Int64
	done := make(chan []launchOutcome, 1)
	go func() { done <- burst(context.Background(), clients, sessions, false, &launched) }()
	for launched.Load() < 30 {
		time.Sleep(20 * time.Millisecond)
	}
	db.Stop()
	stoppedAfter := launched.Load()
	time.Sleep(outage)
	db.Start()
	returned := time.Now()
	outcomes := <-done
	t.Logf("database stopped after %d launches, for %s; launches: %v", stoppedAfter, outage, tally(outcomes))

	problems := s.waitConverged(clients, time.Until(returned.Add(30*time.Second)))
	if len(problems) > 0 {
		t.Fatalf("30 s after the database returned: %s\nlog:\n%s", strings.Join(problems, "; "), s.logs)
	}
	left := s.interrupted()
	t.Logf("converged %s after the database returned; %d launches left pending by the outage were reclaimed",
		time.Since(returned).Round(100*time.Millisecond), left)
	if left == 0 {
		t.Fatal("no launch was in flight when the database stopped: the test did not test the outage")
	}
}
