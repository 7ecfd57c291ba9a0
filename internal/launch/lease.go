package launch

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/calipsoplus/calipso/internal/store"
)

// NewProcessID names this process in leases: host/pid/nonce. The nonce tells a
// process from its predecessor under the same pid (a restarted container's pid 1).
func NewProcessID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	nonce := strings.ToLower(rand.Text()[:8])
	id := fmt.Sprintf("%.40s/%d/%s", host, os.Getpid(), nonce)
	ownNonces.Store(nonce, true)
	return id
}

// ownNonces are the nonces of the services of this process (tests run several), all
// alive.
var ownNonces sync.Map

// deadOnThisHost reports whether owner is a process of this host that is known to be
// gone: its pid is not running, or it is this process's pid under a nonce this
// process never made (the previous life of a restarted container). A process of
// another host is never known dead: its lease decides.
func deadOnThisHost(owner string) bool {
	parts := strings.Split(owner, "/")
	if len(parts) != 3 {
		return false
	}
	host, _ := os.Hostname()
	pid, err := strconv.Atoi(parts[1])
	if err != nil || parts[0] != fmt.Sprintf("%.40s", host) || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		_, ours := ownNonces.Load(parts[2])
		return !ours
	}
	err = syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}

// holdSet counts, per record, the operations of this process working on it: the
// heartbeat renews the leases of these records and no others, so that a record this
// process gave up on (its rollback could not be written) expires and is taken over.
type holdSet struct {
	mu  sync.Mutex
	ids map[int64]int
}

func (h *holdSet) add(id int64) {
	h.mu.Lock()
	h.ids[id]++
	h.mu.Unlock()
}

func (h *holdSet) remove(id int64) {
	h.mu.Lock()
	if h.ids[id]--; h.ids[id] <= 0 {
		delete(h.ids, id)
	}
	h.mu.Unlock()
}

func (h *holdSet) list() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int64, 0, len(h.ids))
	for id := range h.ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Owner is this process's identity in leases.
func (s *Service) Owner() string { return s.owner }

func (s *Service) ttl() time.Duration { return s.cfg.Workloads.LeaseTTL.Duration }

// lease is a fresh lease of this process.
func (s *Service) lease() store.Lease {
	return store.Lease{Owner: s.owner, Expires: time.Now().Add(s.ttl())}
}

func (s *Service) leaseRef() *store.Lease {
	l := s.lease()
	return &l
}

// heartbeat renews the leases of the records this process works on every fifth of
// the lease's life, until ctx ends. A renewal that fails (the database is away) is
// tried again at the next beat; past the lease's life, other processes may take the
// records over, and this process's fenced writes then fail harmlessly.
func (s *Service) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.ttl() / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ids := s.holds.list()
		if len(ids) == 0 {
			continue
		}
		rctx, cancel := bound(ctx, s.ttl()/2)
		held, err := s.db.Renew(rctx, s.owner, ids, time.Now().Add(s.ttl()))
		cancel()
		if err != nil {
			s.log.WarnContext(ctx, "lease heartbeat", "records", len(ids), "err", err)
		} else if held < len(ids) {
			s.log.DebugContext(ctx, "lease heartbeat: some records are no longer this process's", "held", held, "working", len(ids))
		}
	}
}

// Recover runs at start-up, before the server takes requests: the leases of this
// host's processes that are known dead (this process's predecessor) expire at once,
// and the records nobody holds are taken over (interrupted launches failed, stops
// finished), so that no user meets a quota still held by a dead launch. Processes of
// other hosts are left to their leases. Bounded by workloads.reconcile_timeout.
func (s *Service) Recover(ctx context.Context) Report {
	ctx, cancel := bound(ctx, s.cfg.Workloads.ReconcileTimeout.Duration)
	defer cancel()
	var rep Report
	owners, err := s.db.LeaseOwners(ctx)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return rep
	}
	for _, o := range owners {
		if o == s.owner || !deadOnThisHost(o) {
			continue
		}
		n, err := s.db.ExpireLeasesOf(ctx, o)
		if err != nil {
			rep.Errors = append(rep.Errors, err)
			continue
		}
		s.log.InfoContext(ctx, "leases of a dead process of this host expired", "owner", o, "records", n)
	}
	s.reclaim(ctx, &rep)
	s.logReport(ctx, "recovered", rep)
	return rep
}
