package store_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/internal/testenv"
)

// backends runs fn on a fresh, migrated SQLite store and a fresh MariaDB store.
func backends(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		fn(t, openSQLite(t))
	})
	t.Run("mariadb", func(t *testing.T) {
		fn(t, openMySQL(t))
	})
}

func openSQLite(t testing.TB) *store.Store {
	t.Helper()
	return open(t, "sqlite", filepath.Join(t.TempDir(), "calipso.db"))
}

func openMySQL(t testing.TB) *store.Store {
	t.Helper()
	return open(t, "mysql", testenv.MySQLDSN(t))
}

func open(t testing.TB, driver, dsn string) *store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("migrate %s: %v", driver, err)
	}
	return s
}

func TestMigrateTwiceIsANoop(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		if err := s.Migrate(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatalf("second migrate: %v", err)
		}
		st, err := s.MigrationStatus(context.Background())
		if err != nil || len(st) == 0 {
			t.Fatalf("status = %v, %v", st, err)
		}
	})
}

func TestUsers(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, err := s.RecordLogin(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if u.LastLogin == nil || u.UUID == "" || u.IsAdmin {
			t.Fatalf("first login: %+v", u)
		}
		again, err := s.RecordLogin(ctx, "alice")
		if err != nil || again.ID != u.ID || again.UUID != u.UUID {
			t.Fatalf("second login made another user: %+v %v", again, err)
		}
		if err := s.SetAdmin(ctx, "test", "alice", true); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.User(ctx, "alice"); !got.IsAdmin {
			t.Fatal("SetAdmin did not stick")
		}
		if err := s.SetAdmin(ctx, "test", "nobody", true); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("SetAdmin(nobody) = %v, want ErrNotFound", err)
		}
		for _, name := range []string{"", "../x", "a b", "x/y", "é"} {
			if _, err := s.EnsureUser(ctx, name); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("EnsureUser(%q) = %v, want ErrInvalid", name, err)
			}
		}
		for i := range 25 {
			if _, err := s.EnsureUser(ctx, fmt.Sprintf("user%02d", i)); err != nil {
				t.Fatal(err)
			}
		}
		page, total, err := s.Users(ctx, store.UserQuery{Search: "USER1", Ordering: "-username", Page: 1, PageSize: 3})
		if err != nil {
			t.Fatal(err)
		}
		if total != 10 || len(page) != 3 || page[0].Username != "user19" || page[2].Username != "user17" {
			t.Fatalf("search page: total %d, %v", total, names(page))
		}
		// Unknown orderings give the default order (profile id), as the original's.
		byID, _, err := s.Users(ctx, store.UserQuery{Page: 1, PageSize: 30})
		if err != nil || !slices.IsSortedFunc(byID, func(a, b calipso.User) int { return cmp.Compare(a.ID, b.ID) }) {
			t.Fatalf("default order: %v %v", names(byID), err)
		}
		unknown, _, err := s.Users(ctx, store.UserQuery{Ordering: "password", Page: 1, PageSize: 30})
		if err != nil || !slices.Equal(names(unknown), names(byID)) {
			t.Fatalf("unknown ordering: %v %v, want %v", names(unknown), err, names(byID))
		}
		// The frontend's column: Django's field path.
		byName, _, err := s.Users(ctx, store.UserQuery{Ordering: "-user__username", Page: 1, PageSize: 1})
		if err != nil || len(byName) != 1 || byName[0].Username != "user24" {
			t.Fatalf("-user__username: %v %v", names(byName), err)
		}
		// Terms split on spaces and commas, each matching id or username.
		last := byID[len(byID)-1]
		one, total, err := s.Users(ctx, store.UserQuery{Search: fmt.Sprintf("%d,%s", last.ID, strings.ToUpper(last.Username)), Page: 1, PageSize: 30})
		if err != nil || total != 1 || one[0].Username != last.Username {
			t.Fatalf("search terms: %v %d %v, want %s", names(one), total, err, last.Username)
		}
		if entries, err := s.Audit(ctx, "user", "alice", 10); err != nil || len(entries) < 2 {
			t.Fatalf("audit of alice: %v %v", entries, err)
		}
	})
}

func names(us []calipso.User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Username)
	}
	return out
}

func TestExperimentsSyncKeepsFavourites(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		alice, _ := s.EnsureUser(ctx, "alice")
		bob, _ := s.EnsureUser(ctx, "bob")
		start := time.Date(2019, 1, 2, 3, 4, 5, 0, time.UTC)
		list := []calipso.Experiment{
			{ProposalID: "2019001", Subject: "Ünïcode crystals", BeamLine: "BL13", Sessions: []calipso.Session{
				{SessionNumber: "S1", StartDate: start, DataSetPath: `{"/d/1": {"bind": "/data", "mode": "ro"}}`},
				{SessionNumber: "S2", DataSetPath: "[]"}}},
			{ProposalID: "2019002", Subject: "proteins", BeamLine: "BL04"},
		}
		if err := s.SyncUserExperiments(ctx, alice.ID, list); err != nil {
			t.Fatal(err)
		}
		page, total, err := s.Experiments(ctx, alice.ID, store.ExperimentQuery{Page: 1, PageSize: 7})
		if err != nil || total != 2 {
			t.Fatalf("experiments: %d %v", total, err)
		}
		first := page[0]
		if first.ProposalID != "2019001" || len(first.Sessions) != 2 || !first.Sessions[0].StartDate.Equal(start) || !first.Sessions[1].StartDate.IsZero() {
			t.Fatalf("first experiment: %+v", first)
		}
		// Search folds case beyond ASCII on both databases.
		if _, total, err := s.Experiments(ctx, alice.ID, store.ExperimentQuery{Search: "ÜNÏCODE", Page: 1, PageSize: 7}); err != nil || total != 1 {
			t.Fatalf("unicode case-insensitive search: %d %v", total, err)
		}
		if err := s.SetFavorite(ctx, alice.ID, first.LinkID, true); err != nil {
			t.Fatal(err)
		}
		if err := s.SetFavorite(ctx, bob.ID, first.LinkID, true); !errors.Is(err, store.ErrForbidden) {
			t.Fatalf("bob favourites alice's link: %v", err)
		}
		if err := s.SetFavorite(ctx, alice.ID, 99999, true); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("unknown link: %v", err)
		}
		// A fresh fetch that changes the subject and drops 2019002 keeps the favourite.
		list[0].Subject = "renamed"
		if err := s.SyncUserExperiments(ctx, alice.ID, list[:1]); err != nil {
			t.Fatal(err)
		}
		fav := true
		page, total, err = s.Experiments(ctx, alice.ID, store.ExperimentQuery{Favorite: &fav, Page: 1, PageSize: 7})
		if err != nil || total != 1 || page[0].Subject != "renamed" || !page[0].Favorite {
			t.Fatalf("after refetch: %d %+v %v", total, page, err)
		}
		so, err := s.UserSession(ctx, alice.ID, "2019001~S1")
		if err != nil || so.Experiment.Sessions[0].SessionNumber != "S1" {
			t.Fatalf("UserSession: %+v %v", so, err)
		}
		if _, err := s.UserSession(ctx, bob.ID, "2019001~S1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("bob's session lookup of alice's experiment: %v", err)
		}
	})
}

// TestExperimentsVersion: every change to what a user's experiments page shows
// moves that user's version (pages are cached under it), and only theirs.
func TestExperimentsVersion(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for _, name := range []string{"vera", "wim", "xena"} {
			if _, err := s.EnsureUser(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		shared := calipso.Experiment{ProposalID: "V1", Subject: "shared", Sessions: []calipso.Session{{SessionNumber: "V1-1", DataSetPath: "[]"}}}
		if _, err := s.PutExperiment(ctx, "test", shared); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"vera", "wim"} {
			if err := s.Link(ctx, "test", name, "V1"); err != nil {
				t.Fatal(err)
			}
		}
		userID := func(name string) int64 {
			u, err := s.User(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			return u.ID
		}
		veraLink := func() int64 {
			id, _, err := s.LinkOf(ctx, userID("vera"), "V1")
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		steps := []struct {
			name    string
			change  func() error
			changed []string // whose version must move; the others' must not
		}{
			{"favourite", func() error { return s.SetFavorite(ctx, userID("vera"), veraLink(), true) }, []string{"vera"}},
			{"same experiment again", func() error { _, err := s.PutExperiment(ctx, "test", shared); return err }, nil},
			{"subject edited", func() error {
				e := shared
				e.Subject = "edited"
				_, err := s.PutExperiment(ctx, "test", e)
				return err
			}, []string{"vera", "wim"}},
			{"session added", func() error {
				e := shared
				e.Subject = "edited"
				e.Sessions = []calipso.Session{{SessionNumber: "V1-2", DataSetPath: "[]"}}
				_, err := s.PutExperiment(ctx, "test", e)
				return err
			}, []string{"vera", "wim"}},
			{"linked", func() error { return s.Link(ctx, "test", "xena", "V1") }, []string{"xena"}},
			{"linked again", func() error { return s.Link(ctx, "test", "xena", "V1") }, nil},
			{"unlinked", func() error { return s.Unlink(ctx, "test", "wim", "V1") }, []string{"wim"}},
			{"fetched from the office", func() error { return s.SyncUserExperiments(ctx, userID("wim"), nil) }, []string{"wim"}},
			{"experiment removed", func() error { return s.RemoveExperiment(ctx, "test", "V1") }, []string{"vera", "xena"}},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				before := map[string]int64{}
				for _, name := range []string{"vera", "wim", "xena"} {
					u, _ := s.User(ctx, name)
					before[name] = u.ExperimentsVersion
				}
				if err := st.change(); err != nil {
					t.Fatal(err)
				}
				for name, v := range before {
					u, _ := s.User(ctx, name)
					if moved, want := u.ExperimentsVersion != v, slices.Contains(st.changed, name); moved != want {
						t.Errorf("%s's version moved: %v, want %v", name, moved, want)
					}
				}
			})
		}
	})
}

// testImage is what resource tests reserve for: its numbers don't matter.
var testImage = calipso.Image{PublicName: "x", Image: "x", Protocol: "vnc", CPU: 1, Memory: "1G", HDD: "1G", ResourceType: "docker"}

func TestReserveIsExactUnderConcurrency(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "racer")
		img := testImage
		limit := calipso.Quota{MaxSimultaneous: 5, CPUs: 100, MemoryBytes: 100 << 30, DiskBytes: 100 << 30}
		const n = 50
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			ok, full int
			other    []error
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: fmt.Sprint("p~", i), Image: img, Default: limit, OnePerSession: true})
				mu.Lock()
				defer mu.Unlock()
				var qe *store.QuotaError
				switch {
				case err == nil:
					ok++
				case errors.As(err, &qe):
					full++
				default:
					other = append(other, err)
				}
			}()
		}
		wg.Wait()
		if ok != 5 || full != n-5 || len(other) > 0 {
			t.Fatalf("ok %d, quota refusals %d, other errors %v", ok, full, other)
		}
		used, err := s.Usage(ctx, u.ID)
		if err != nil || used.MaxSimultaneous != 5 || used.CPUs != 5 || used.MemoryBytes != 5<<30 {
			t.Fatalf("usage %+v %v", used, err)
		}
	})
}

func TestTransitions(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "mover")
		img := testImage
		limit := calipso.Quota{MaxSimultaneous: 1, CPUs: 1, MemoryBytes: 1 << 30, DiskBytes: 1 << 30}
		r, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~s", Image: img, Default: limit,
			NameOf: func(id int64) string { return fmt.Sprint("calipso-t-", id) }})
		if err != nil || r.State != calipso.Pending || r.EngineName != fmt.Sprint("calipso-t-", r.ID) {
			t.Fatalf("reserve: %+v %v", r, err)
		}
		if _, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~t", Image: img, Default: limit}); err == nil {
			t.Fatal("second launch over a quota of 1 was accepted")
		}
		port := "32768"
		steps := []struct {
			to      calipso.State
			wantErr error
		}{
			{calipso.Stopped, store.ErrConflict}, // pending can't become stopped directly
			{calipso.Running, nil},
			{calipso.Running, nil}, // idempotent
			{calipso.Stopping, nil},
			{calipso.Running, store.ErrConflict},
			{calipso.Stopped, nil},
			{calipso.Removed, nil},
			{calipso.Failed, store.ErrConflict},
		}
		for _, st := range steps {
			_, err := s.Move(ctx, r.ID, st.to, store.Update{HostPort: &port})
			if !errors.Is(err, st.wantErr) && !(st.wantErr == nil && err == nil) {
				t.Fatalf("move to %s: %v, want %v", st.to, err, st.wantErr)
			}
		}
		used, _ := s.Usage(ctx, u.ID)
		if used.MaxSimultaneous != 0 {
			t.Fatalf("a removed resource still holds quota: %+v", used)
		}
		if _, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: "p~t", Image: img, Default: limit}); err != nil {
			t.Fatalf("launch after release: %v", err)
		}
	})
}

// TestMoveFrom: a move conditioned on the state the caller saw loses to any move
// made in between (the reconciler against a Stop).
func TestMoveFrom(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		u, _ := s.EnsureUser(ctx, "reconciled")
		img := testImage
		limit := calipso.Quota{MaxSimultaneous: 5, CPUs: 5, MemoryBytes: 5 << 30, DiskBytes: 5 << 30}
		reserve := func(t *testing.T, exp string) calipso.Resource {
			t.Helper()
			r, err := s.Reserve(ctx, store.Launch{UserID: u.ID, Experiment: exp, Image: img, Default: limit})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		why := "workload vanished"
		rows := []struct {
			name     string
			before   []calipso.State // moves made before MoveFrom
			from, to calipso.State
			wantErr  error
			want     calipso.State
		}{
			{"running to failed", []calipso.State{calipso.Running}, calipso.Running, calipso.Failed, nil, calipso.Failed},
			{"a stop came first", []calipso.State{calipso.Running, calipso.Stopping}, calipso.Running, calipso.Failed, store.ErrConflict, calipso.Stopping},
			{"stuck pending claimed", nil, calipso.Pending, calipso.Failed, nil, calipso.Failed},
			{"pending that started meanwhile", []calipso.State{calipso.Running}, calipso.Pending, calipso.Failed, store.ErrConflict, calipso.Running},
			{"transition not allowed", nil, calipso.Pending, calipso.Stopped, store.ErrInvalid, calipso.Pending},
		}
		for i, row := range rows {
			t.Run(row.name, func(t *testing.T) {
				r := reserve(t, fmt.Sprintf("p~%d", i))
				for _, st := range row.before {
					if _, err := s.Move(ctx, r.ID, st, store.Update{}); err != nil {
						t.Fatal(err)
					}
				}
				_, err := s.MoveFrom(ctx, r.ID, row.from, row.to, store.Update{Error: &why})
				if !errors.Is(err, row.wantErr) && !(row.wantErr == nil && err == nil) {
					t.Fatalf("MoveFrom %s → %s: %v, want %v", row.from, row.to, err, row.wantErr)
				}
				got, err := s.Resource(ctx, r.ID)
				if err != nil || got.State != row.want {
					t.Fatalf("state %s (%v), want %s", got.State, err, row.want)
				}
				if (got.Error == why) != (row.wantErr == nil) {
					t.Fatalf("error field %q after MoveFrom that returned %v", got.Error, err)
				}
			})
		}
	})
}

func TestHTTPSessions(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		alice, err := s.EnsureUser(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetAdmin(ctx, "test", "alice", true); err != nil {
			t.Fatal(err)
		}
		for _, src := range []string{store.RoleGranted, store.RoleOIDC} {
			if _, err := s.SetRoles(ctx, "test", "alice", src, []string{"staff", "beamline"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CreateHTTPSession(ctx, "tok", "alice", `{"a":1}`, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateHTTPSession(ctx, "tok", "bob", `{}`, time.Now().Add(time.Hour)); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("a second session under a used token: %v, want ErrConflict", err)
		}
		if err := s.SaveHTTPSession(ctx, "tok", "alice", `{"a":1}`, time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("resave unchanged: %v", err)
		}
		got, err := s.HTTPSessionUser(ctx, "tok")
		if err != nil || got.Username != "alice" || got.Data != `{"a":1}` {
			t.Fatalf("get: %+v %v", got, err)
		}
		if got.User == nil || got.User.ID != alice.ID || got.User.UUID != alice.UUID || !got.User.IsAdmin ||
			!slices.Equal(got.User.Roles, []string{"beamline", "staff"}) {
			t.Fatalf("the session's account: %+v, want alice (%d, admin, beamline and staff)", got.User, alice.ID)
		}
		// A federated login waiting for its account, and a session whose account went.
		for _, row := range []struct{ token, username string }{{"pending", ""}, {"orphan", "nobody"}} {
			if err := s.SaveHTTPSession(ctx, row.token, row.username, "{}", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			got, err := s.HTTPSessionUser(ctx, row.token)
			if err != nil || got.Username != row.username || got.User != nil {
				t.Fatalf("%s: %+v %v, want the session without an account", row.token, got, err)
			}
		}
		if err := s.SaveHTTPSession(ctx, "old", "bob", "{}", time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.HTTPSessionUser(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired session: %v", err)
		}
		if n, err := s.PurgeHTTPSessions(ctx); err != nil || n != 1 {
			t.Fatalf("purge: %d %v", n, err)
		}
		if err := s.DeleteHTTPSession(ctx, "tok"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.HTTPSessionUser(ctx, "tok"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("deleted session: %v", err)
		}
	})
}

func TestImagesAndQuotas(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		if err := s.SeedImages(ctx); err != nil {
			t.Fatal(err)
		}
		ims, err := s.Images(ctx)
		if err != nil || len(ims) != len(store.DefaultImages) {
			t.Fatalf("seeded images: %v %v", ims, err)
		}
		bad := calipso.Image{PublicName: "../x", Image: "", Protocol: "ftp", CPU: -1, Memory: "3X", HDD: "", ResourceType: "vm"}
		_, err = s.PutImage(ctx, "t", bad)
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("bad image accepted: %v", err)
		}
		for _, word := range []string{"public_name", "image", "protocol", "resource_type", "cpu", "memory", "hdd"} {
			if !strings.Contains(err.Error(), word) {
				t.Errorf("error %q does not name %s", err, word)
			}
		}
		u, _ := s.EnsureUser(ctx, "q")
		if _, err := s.Quota(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("quota of a new user: %v", err)
		}
		want := calipso.Quota{MaxSimultaneous: 2, CPUs: 1.5, MemoryBytes: 3 << 30, DiskBytes: 4 << 30}
		for range 2 { // insert then update
			if err := s.SetQuota(ctx, "admin", u.ID, want); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.Quota(ctx, u.ID); err != nil || got != want {
			t.Fatalf("quota = %+v %v", got, err)
		}
	})
}

// TestImagePidsLimit: an image's own pids limit is stored, replaced and read back (by
// Image and Images); out of range it is refused.
func TestImagePidsLimit(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		im := calipso.Image{PublicName: "forky", Image: "x", Protocol: "vnc", CPU: 1, Memory: "1G", HDD: "1G", ResourceType: "docker", PidsLimit: 4096}
		for _, limit := range []int64{4096, 256, 0} { // insert, then updates (0: back to the settings')
			im.PidsLimit = limit
			if _, err := s.PutImage(ctx, "admin", im); err != nil {
				t.Fatalf("PutImage with pids limit %d: %v", limit, err)
			}
			got, err := s.Image(ctx, "forky")
			if err != nil || got != im {
				t.Fatalf("Image = %+v, %v; want %+v", got, err, im)
			}
			all, err := s.Images(ctx)
			if err != nil || len(all) != 1 || all[0] != im {
				t.Fatalf("Images = %+v, %v; want [%+v]", all, err, im)
			}
		}
		for _, bad := range []int64{-1, 1<<22 + 1} {
			im.PidsLimit = bad
			if _, err := s.PutImage(ctx, "admin", im); !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "pids_limit") {
				t.Errorf("PutImage with pids limit %d: %v, want ErrInvalid naming pids_limit", bad, err)
			}
		}
	})
}

// TestPutSessionKeepsTheExperiment: adding a session (calipso session add/import)
// leaves the experiment's own fields as they were.
func TestPutSessionKeepsTheExperiment(t *testing.T) {
	backends(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		alice, _ := s.EnsureUser(ctx, "alice")
		uid, gid := 2001, 2000
		full := calipso.Experiment{ProposalID: "2019001", Subject: "crystals", Body: "lysozyme", BeamLine: "BL13", UID: &uid, GID: &gid,
			Sessions: []calipso.Session{{SessionNumber: "2019001-01", DataSetPath: "[]"}}}
		if _, err := s.PutExperiment(ctx, "test", full); err != nil {
			t.Fatal(err)
		}
		if err := s.Link(ctx, "test", "alice", "2019001"); err != nil {
			t.Fatal(err)
		}
		if err := s.PutSession(ctx, "test", "2019001", calipso.Session{SessionNumber: "2019001-02", Subject: "second", DataSetPath: "[]"}); err != nil {
			t.Fatal(err)
		}
		page, _, err := s.Experiments(ctx, alice.ID, store.ExperimentQuery{Page: 1, PageSize: 7})
		if err != nil || len(page) != 1 {
			t.Fatalf("experiments: %v %v", page, err)
		}
		got := page[0]
		if got.Subject != "crystals" || got.Body != "lysozyme" || got.BeamLine != "BL13" || got.UID == nil || *got.UID != uid || got.GID == nil || *got.GID != gid {
			t.Errorf("after PutSession the experiment is %+v, want its fields kept", got.Experiment)
		}
		if len(got.Sessions) != 2 || got.Sessions[1].Subject != "second" {
			t.Errorf("sessions %+v, want the first and the new one", got.Sessions)
		}
		// A session for a proposal nobody described yet creates it, empty.
		if err := s.PutSession(ctx, "test", "2030001", calipso.Session{SessionNumber: "2030001-01", DataSetPath: "[]"}); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.HasExperiment(ctx, "2030001"); err != nil || !ok {
			t.Errorf("HasExperiment(2030001) = %v, %v", ok, err)
		}
	})
}
