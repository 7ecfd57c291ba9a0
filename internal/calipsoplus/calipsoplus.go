// Package calipsoplus copies a CalipsoPlus (Django) MySQL database into Calipso's
// store: users, admin rights, experiments and sessions, participations and
// favourites, quotas and images. It reads everything first, so a source it cannot
// read changes nothing; then it applies with the store's idempotent upserts, so
// running it twice changes nothing and a run that stopped half-way is completed by
// running it again.
//
// Not imported, on purpose:
//   - containers (calipso_containers): live ones run outside Calipso's management and
//     would be double-counted against quotas; they are counted and listed so the site
//     stops them in CalipsoPlus first (or removes them by hand). Finished ones are history.
//   - passwords (the user office checks them) and inactive users. E-mail addresses
//     and calipso_uid UUIDs are kept.
//   - admin rights are granted, never revoked (an admin from settings stays one).
package calipsoplus

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/quotas"
)

// Import copies the CalipsoPlus database that src names into db and reports what it
// found and changed. src is a go-sql-driver DSN's parsed form; its times are read as UTC.
func Import(ctx context.Context, db *store.Store, src mysql.Config) (Report, error) {
	src.ParseTime = true
	src.Loc = time.UTC
	conn, err := sql.Open("mysql", src.FormatDSN())
	if err != nil {
		return Report{}, fmt.Errorf("open source: %w", err)
	}
	defer conn.Close()
	data, err := read(ctx, conn)
	if err != nil {
		return Report{}, fmt.Errorf("read %s: %w", src.DBName, err)
	}
	return apply(ctx, db, data)
}

// account is a CalipsoPlus account; profileID is calipso_users.id (0 without a profile).
type account struct {
	profileID int64
	username  string
	admin     bool
	email     string
	uuid      string // calipso_uid, 32 hex digits; "" without a profile
}

type participation struct {
	username, proposal string
	favorite           bool
}

type userQuota struct {
	username string
	quota    calipso.Quota
}

// data is what the import read, already converted to Calipso's types.
type data struct {
	users       []account
	experiments []calipso.Experiment
	links       []participation
	quotas      []userQuota
	images      []calipso.Image
	containers  int      // rows in calipso_containers
	live        []string // live containers, "name (status, user)"
	skipped     []string // rows left out, with why
}

// liveContainerStates are CalipsoPlus statuses of containers that may still run
// (it wrote them in mixed case: "Running", "Pending").
var liveContainerStates = map[string]bool{"busy": true, "created": true, "running": true, "pending": true}

// resourceTypes maps CalipsoPlus resource types to Calipso's.
var resourceTypes = map[string]calipso.ResourceType{
	"docker_container": calipso.Docker,
	"static_link":      calipso.StaticLink,
	"kubernetes":       calipso.Kubernetes,
	"virtual_machine":  calipso.VirtualMachine,
}

// read reads every table first, converting each row; a row Calipso cannot take is
// left out and noted with why.
func read(ctx context.Context, src *sql.DB) (*data, error) {
	d := &data{}
	byProfile := map[int64]string{} // calipso_users.id -> username

	rows, err := src.QueryContext(ctx, `SELECT COALESCE(cu.id, 0), a.username, a.is_superuser, a.is_active, a.email, COALESCE(cu.calipso_uid, '')
		FROM auth_user a LEFT JOIN calipso_users cu ON cu.user_id = a.id ORDER BY a.id`)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	err = eachRow(rows, func() error {
		var u account
		var active bool
		if err := rows.Scan(&u.profileID, &u.username, &u.admin, &active, &u.email, &u.uuid); err != nil {
			return err
		}
		switch {
		case !active:
			d.skipped = append(d.skipped, fmt.Sprintf("user %q: inactive", u.username))
		case !store.ValidUsername(u.username):
			d.skipped = append(d.skipped, fmt.Sprintf("user %q: not a valid Calipso username", u.username))
		default:
			d.users = append(d.users, u)
			if u.profileID != 0 {
				byProfile[u.profileID] = u.username
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}

	// Experiments: CalipsoPlus had no unique proposal_id; duplicates merge into one.
	byExp := map[int64]string{} // calipso_experiments.id -> proposal_id
	index := map[string]int{}   // proposal_id -> position in d.experiments
	rows, err = src.QueryContext(ctx, `SELECT id, proposal_id, subject, body, beam_line, uid, gid FROM calipso_experiments ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("experiments: %w", err)
	}
	err = eachRow(rows, func() error {
		var id int64
		var e calipso.Experiment
		var uid, gid string
		if err := rows.Scan(&id, &e.ProposalID, &e.Subject, &e.Body, &e.BeamLine, &uid, &gid); err != nil {
			return err
		}
		e.ProposalID = strings.TrimSpace(e.ProposalID)
		if e.ProposalID == "" || len(e.ProposalID) > 50 {
			d.skipped = append(d.skipped, fmt.Sprintf("experiment id %d: proposal_id %q is empty or too long", id, e.ProposalID))
			return nil
		}
		e.UID, e.GID = identity(uid), identity(gid)
		if (e.UID == nil) != (e.GID == nil) {
			d.skipped = append(d.skipped, fmt.Sprintf("experiment %s: uid %q / gid %q: only one is a number, both left unknown", e.ProposalID, uid, gid))
			e.UID, e.GID = nil, nil
		}
		byExp[id] = e.ProposalID
		if _, dup := index[e.ProposalID]; dup {
			d.skipped = append(d.skipped, fmt.Sprintf("experiment id %d: proposal %s appears twice; sessions merged, first row's fields kept", id, e.ProposalID))
			return nil
		}
		index[e.ProposalID] = len(d.experiments)
		d.experiments = append(d.experiments, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("experiments: %w", err)
	}

	rows, err = src.QueryContext(ctx, `SELECT experiment_id, session_number, subject, body, start_date, end_date, data_set_path FROM calipso_sessions ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	err = eachRow(rows, func() error {
		var expID int64
		var ss calipso.Session
		var start, end sql.NullTime
		if err := rows.Scan(&expID, &ss.SessionNumber, &ss.Subject, &ss.Body, &start, &end, &ss.DataSetPath); err != nil {
			return err
		}
		proposal, ok := byExp[expID]
		ss.SessionNumber = strings.TrimSpace(ss.SessionNumber)
		switch {
		case !ok:
			d.skipped = append(d.skipped, fmt.Sprintf("session %q: its experiment was skipped", ss.SessionNumber))
			return nil
		case ss.SessionNumber == "" || len(ss.SessionNumber) > 50:
			d.skipped = append(d.skipped, fmt.Sprintf("session of %s: session_number %q is empty or too long", proposal, ss.SessionNumber))
			return nil
		}
		if start.Valid {
			ss.StartDate = start.Time.UTC()
		}
		if end.Valid {
			ss.EndDate = end.Time.UTC()
		}
		if strings.TrimSpace(ss.DataSetPath) == "" {
			ss.DataSetPath = "[]"
		}
		e := &d.experiments[index[proposal]]
		e.Sessions = append(e.Sessions, ss)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}

	rows, err = src.QueryContext(ctx, `SELECT calipso_user_id, calipso_experiment_id, favorite FROM calipso_user_experiment ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("participations: %w", err)
	}
	err = eachRow(rows, func() error {
		var profile, expID int64
		var l participation
		if err := rows.Scan(&profile, &expID, &l.favorite); err != nil {
			return err
		}
		var okU, okE bool
		l.username, okU = byProfile[profile]
		l.proposal, okE = byExp[expID]
		if !okU || !okE {
			d.skipped = append(d.skipped, fmt.Sprintf("participation of profile %d in experiment id %d: user or experiment skipped", profile, expID))
			return nil
		}
		d.links = append(d.links, l)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("participations: %w", err)
	}

	rows, err = src.QueryContext(ctx, `SELECT calipso_user_id, max_simultaneous, cpu, memory, hdd FROM calipso_quotas ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("quotas: %w", err)
	}
	err = eachRow(rows, func() error {
		var profile int64
		var max, cpu int
		var mem, hdd string
		if err := rows.Scan(&profile, &max, &cpu, &mem, &hdd); err != nil {
			return err
		}
		name, ok := byProfile[profile]
		if !ok {
			d.skipped = append(d.skipped, fmt.Sprintf("quota of profile %d: user skipped", profile))
			return nil
		}
		q := calipso.Quota{MaxSimultaneous: max, CPUs: float64(cpu)}
		var errs []error
		var err error
		if q.MemoryBytes, err = quotas.ParseSize(mem); err != nil {
			errs = append(errs, fmt.Errorf("memory: %w", err))
		}
		if q.DiskBytes, err = quotas.ParseSize(hdd); err != nil {
			errs = append(errs, fmt.Errorf("hdd: %w", err))
		}
		if max < 0 || cpu < 0 {
			errs = append(errs, errors.New("negative value"))
		}
		if len(errs) > 0 {
			d.skipped = append(d.skipped, fmt.Sprintf("quota of %s: %v", name, errors.Join(errs...)))
			return nil
		}
		d.quotas = append(d.quotas, userQuota{username: name, quota: q})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("quotas: %w", err)
	}

	rows, err = src.QueryContext(ctx, `SELECT i.public_name, i.image, i.protocol, i.cpu, i.memory, i.hdd, i.port_hook, i.logs_er, COALESCE(t.resource_type, '')
		FROM calipso_images i LEFT JOIN calipso_resource_types t ON t.id = i.resource_type_id ORDER BY i.id`)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	err = eachRow(rows, func() error {
		var im calipso.Image
		var cpu int
		var kind string
		var portHook string // Calipso picks the port by protocol
		if err := rows.Scan(&im.PublicName, &im.Image, &im.Protocol, &cpu, &im.Memory, &im.HDD, &portHook, &im.LogRegex, &kind); err != nil {
			return err
		}
		im.CPU = float64(cpu)
		im.Protocol = strings.ToLower(strings.TrimSpace(im.Protocol))
		// CalipsoPlus's Django default for a missing type was a Docker container.
		if kind == "" {
			kind = "docker_container"
		}
		rt, ok := resourceTypes[strings.ToLower(kind)]
		if !ok {
			d.skipped = append(d.skipped, fmt.Sprintf("image %q: unknown resource type %q", im.PublicName, kind))
			return nil
		}
		im.ResourceType = rt
		if err := store.ValidateImage(im); err != nil {
			d.skipped = append(d.skipped, fmt.Sprintf("image %q: %v", im.PublicName, err))
			return nil
		}
		d.images = append(d.images, im)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}

	rows, err = src.QueryContext(ctx, `SELECT c.container_name, c.container_status, COALESCE(a.username, '')
		FROM calipso_containers c LEFT JOIN calipso_users cu ON cu.id = c.calipso_user_id LEFT JOIN auth_user a ON a.id = cu.user_id ORDER BY c.id`)
	if err != nil {
		return nil, fmt.Errorf("containers: %w", err)
	}
	err = eachRow(rows, func() error {
		var name, status, user string
		if err := rows.Scan(&name, &status, &user); err != nil {
			return err
		}
		d.containers++
		if liveContainerStates[strings.ToLower(strings.TrimSpace(status))] {
			d.live = append(d.live, fmt.Sprintf("%s (%s, %s)", name, status, user))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("containers: %w", err)
	}
	return d, nil
}

// eachRow calls fn for every row and closes rows.
func eachRow(rows *sql.Rows, fn func() error) error {
	defer rows.Close()
	for rows.Next() {
		if err := fn(); err != nil {
			return err
		}
	}
	return rows.Err()
}

// identity reads CalipsoPlus's uid/gid strings: "." (its "unknown"), empty or not
// a non-negative number is unknown.
func identity(s string) *int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return nil
	}
	return &n
}

// Report counts what the import found and what it changed.
type Report struct {
	users, newUsers, adminsGranted   int
	experiments, newExperiments      int
	sessions                         int
	links, newLinks, favoritesSet    int
	quotas, quotasChanged            int
	images, newImages, imagesChanged int
	containers                       int
	live, skipped                    []string
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "users: %d (%d new, %d granted admin)\n", r.users, r.newUsers, r.adminsGranted)
	fmt.Fprintf(&b, "experiments: %d (%d new), sessions: %d\n", r.experiments, r.newExperiments, r.sessions)
	fmt.Fprintf(&b, "participations: %d (%d new, %d favourites set)\n", r.links, r.newLinks, r.favoritesSet)
	fmt.Fprintf(&b, "quotas: %d (%d changed)\n", r.quotas, r.quotasChanged)
	fmt.Fprintf(&b, "images: %d (%d new, %d changed)\n", r.images, r.newImages, r.imagesChanged)
	fmt.Fprintf(&b, "containers: %d not imported, %d of them may still run\n", r.containers, len(r.live))
	for _, c := range r.live {
		fmt.Fprintf(&b, "  live container, stop it in CalipsoPlus or by hand: %s\n", c)
	}
	for _, s := range r.skipped {
		fmt.Fprintf(&b, "  note: %s\n", s)
	}
	return b.String()
}

// actor names the import in the audit log.
const actor = "import-calipsoplus"

// apply writes d with the store's idempotent upserts, counting what it changed.
func apply(ctx context.Context, db *store.Store, d *data) (Report, error) {
	rep := Report{containers: d.containers, live: d.live, skipped: d.skipped}
	ids := map[string]int64{}
	for _, u := range d.users {
		_, err := db.User(ctx, u.username)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return rep, err
		}
		if err != nil {
			rep.newUsers++
		}
		cur, err := db.EnsureUser(ctx, u.username)
		if err != nil {
			return rep, fmt.Errorf("user %s: %w", u.username, err)
		}
		ids[u.username] = cur.ID
		rep.users++
		if err := db.SetProfile(ctx, actor, u.username, u.email, u.uuid); err != nil {
			return rep, fmt.Errorf("user %s: %w", u.username, err)
		}
		if u.admin && !cur.IsAdmin {
			if err := db.SetAdmin(ctx, actor, u.username, true); err != nil {
				return rep, fmt.Errorf("user %s: %w", u.username, err)
			}
			rep.adminsGranted++
		}
	}

	for _, e := range d.experiments {
		exists, err := db.HasExperiment(ctx, e.ProposalID)
		if err != nil {
			return rep, err
		}
		if _, err := db.PutExperiment(ctx, actor, e); err != nil {
			return rep, err
		}
		rep.experiments++
		rep.sessions += len(e.Sessions)
		if !exists {
			rep.newExperiments++
		}
	}

	for _, l := range d.links {
		userID := ids[l.username]
		linkID, favorite, err := db.LinkOf(ctx, userID, l.proposal)
		if errors.Is(err, store.ErrNotFound) {
			if err := db.Link(ctx, actor, l.username, l.proposal); err != nil {
				return rep, err
			}
			rep.newLinks++
			linkID, favorite, err = db.LinkOf(ctx, userID, l.proposal)
		}
		if err != nil {
			return rep, err
		}
		rep.links++
		// Only set: a favourite chosen in Calipso since is the user's newer choice.
		if l.favorite && !favorite {
			if err := db.SetFavorite(ctx, userID, linkID, true); err != nil {
				return rep, err
			}
			rep.favoritesSet++
		}
	}

	for _, q := range d.quotas {
		userID := ids[q.username]
		cur, err := db.Quota(ctx, userID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return rep, fmt.Errorf("quota of %s: %w", q.username, err)
		}
		rep.quotas++
		if err == nil && cur == q.quota {
			continue
		}
		if err := db.SetQuota(ctx, actor, userID, q.quota); err != nil {
			return rep, fmt.Errorf("quota of %s: %w", q.username, err)
		}
		rep.quotasChanged++
	}

	for _, im := range d.images {
		cur, err := db.Image(ctx, im.PublicName)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return rep, fmt.Errorf("image %s: %w", im.PublicName, err)
		}
		rep.images++
		if err == nil && cur == im {
			continue
		}
		if _, err := db.PutImage(ctx, actor, im); err != nil {
			return rep, fmt.Errorf("image %s: %w", im.PublicName, err)
		}
		if err == nil {
			rep.imagesChanged++
		} else {
			rep.newImages++
		}
	}
	sort.Strings(rep.live)
	return rep, nil
}
