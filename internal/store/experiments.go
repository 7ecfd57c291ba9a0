package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
)

// UserExperiment is an experiment as one user sees it: the link id (what favorite/
// takes) and the favourite flag, with the experiment and its sessions.
type UserExperiment struct {
	LinkID   int64
	Favorite bool
	calipso.Experiment
}

// ExperimentQuery selects a page of a user's experiments.
type ExperimentQuery struct {
	Search   string // terms (split on spaces and commas), each in subject, body, proposal id or beamline
	Ordering string // proposal_id, subject, body, beam_line, calipsouserexperiment__favorite; leading - reverses; others ignored
	Favorite *bool  // only favourites (true) or only others (false)
	Page     int    // from 1
	PageSize int
}

var experimentOrdering = map[string]string{
	"proposal_id": "e.proposal_id", "subject": "e.subject", "body": "e.body", "beam_line": "e.beam_line",
	// The star column: this user's flag only (the original joined every participant's).
	"calipsouserexperiment__favorite": "l.favorite",
}

// Experiments returns one page of the user's experiments and the total count. Sessions
// of the page are read in one query, whatever the page size.
func (s *Store) Experiments(ctx context.Context, userID int64, q ExperimentQuery) ([]UserExperiment, int, error) {
	where := ` FROM user_experiments l JOIN experiments e ON e.id = l.experiment_id WHERE l.user_id = ?`
	args := []any{userID}
	if q.Favorite != nil {
		where += ` AND l.favorite = ?`
		args = append(args, *q.Favorite)
	}
	if terms := searchTerms(q.Search); len(terms) > 0 {
		cond, cargs := searchClause(terms, s.fold("e.subject"), s.fold("e.body"), s.fold("e.proposal_id"), s.fold("e.beam_line"))
		where += " AND " + cond
		args = append(args, cargs...)
	}
	order := strings.Replace(orderBy(q.Ordering, experimentOrdering, "proposal_id"), ", id", ", l.id", 1)
	var total int
	if err := s.queryRow(ctx, `SELECT COUNT(*)`+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count experiments: %w", s.wrap(err))
	}
	if total == 0 || (q.Page-1)*q.PageSize >= total {
		return nil, total, nil
	}
	rows, err := s.query(ctx, `SELECT l.id, l.favorite, e.id, e.proposal_id, e.subject, e.body, e.beam_line, e.uid, e.gid`+
		where+order+` LIMIT ? OFFSET ?`, append(args, q.PageSize, (q.Page-1)*q.PageSize)...)
	if err != nil {
		return nil, 0, fmt.Errorf("experiments: %w", s.wrap(err))
	}
	defer rows.Close()
	var (
		out   []UserExperiment
		ids   []any
		index = map[int64]int{}
	)
	for rows.Next() {
		var (
			ue       UserExperiment
			id       int64
			uid, gid sql.NullInt64
		)
		if err := rows.Scan(&ue.LinkID, &ue.Favorite, &id, &ue.ProposalID, &ue.Subject, &ue.Body, &ue.BeamLine, &uid, &gid); err != nil {
			return nil, 0, s.wrap(err)
		}
		ue.UID, ue.GID = intPtr(uid), intPtr(gid)
		ue.Sessions = []calipso.Session{}
		index[id] = len(out)
		ids = append(ids, id)
		out = append(out, ue)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, s.wrap(err)
	}
	rows.Close()
	srows, err := s.query(ctx, `SELECT experiment_id, session_number, subject, body, start_date, end_date, data_set_path
		FROM sessions WHERE experiment_id IN (`+in(len(ids))+`) ORDER BY experiment_id, session_number`, ids...)
	if err != nil {
		return nil, 0, fmt.Errorf("sessions: %w", s.wrap(err))
	}
	defer srows.Close()
	for srows.Next() {
		var (
			eid        int64
			ss         calipso.Session
			start, end sql.NullTime
		)
		if err := srows.Scan(&eid, &ss.SessionNumber, &ss.Subject, &ss.Body, &start, &end, &ss.DataSetPath); err != nil {
			return nil, 0, s.wrap(err)
		}
		if start.Valid {
			ss.StartDate = start.Time.UTC()
		}
		if end.Valid {
			ss.EndDate = end.Time.UTC()
		}
		i := index[eid]
		out[i].Sessions = append(out[i].Sessions, ss)
	}
	return out, total, s.wrap(srows.Err())
}

func dateArg(d time.Time) sql.NullTime {
	if d.IsZero() {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: d.UTC(), Valid: true}
}

// PutExperiment creates or updates an experiment and its sessions (sessions not in e
// are kept: CLI and CSV imports add them one by one). It returns the experiment id.
// The audit log records a change only: re-importing the same data writes nothing.
func (s *Store) PutExperiment(ctx context.Context, actor string, e calipso.Experiment) (int64, error) {
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var (
			changed bool
			err     error
		)
		id, changed, err = s.putExperiment(ctx, tx, e)
		if err == nil && changed {
			s.audit(ctx, tx, actor, "put", "experiment", e.ProposalID, nil)
		}
		return err
	})
	return id, err
}

// PutSession creates or updates one session of proposalID, creating the experiment
// with empty fields when it does not exist yet, and leaving an existing one's
// subject, body, beamline, uid and gid as they are (the CLI and CSV imports add
// sessions to experiments the user office or an import described).
func (s *Store) PutSession(ctx context.Context, actor, proposalID string, ss calipso.Session) error {
	if strings.TrimSpace(proposalID) == "" || len(proposalID) > 50 {
		return fmt.Errorf("%w: proposal_id must be 1 to 50 characters", ErrInvalid)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM experiments WHERE proposal_id = ?`, proposalID).Scan(&id)
		if err == sql.ErrNoRows {
			id, _, err = s.putExperiment(ctx, tx, calipso.Experiment{ProposalID: proposalID})
		}
		if err != nil {
			return fmt.Errorf("experiment %s: %w", proposalID, s.wrap(err))
		}
		wrote, err := s.putSession(ctx, tx, id, ss)
		if err != nil {
			return fmt.Errorf("experiment %s: %w", proposalID, err)
		}
		if !wrote {
			return nil
		}
		if err := bumpParticipants(ctx, tx, id); err != nil {
			return fmt.Errorf("experiment %s: %w", proposalID, err)
		}
		s.audit(ctx, tx, actor, "put", "session", proposalID+"~"+ss.SessionNumber, nil)
		return nil
	})
}

// putExperiment upserts e and its sessions; changed says whether any row was written.
func (s *Store) putExperiment(ctx context.Context, tx *sql.Tx, e calipso.Experiment) (id int64, changed bool, err error) {
	if strings.TrimSpace(e.ProposalID) == "" || len(e.ProposalID) > 50 {
		return 0, false, fmt.Errorf("%w: proposal_id must be 1 to 50 characters", ErrInvalid)
	}
	now := s.now()
	subject, beamLine := truncate(e.Subject, 255), truncate(e.BeamLine, 200)
	var (
		cur      calipso.Experiment
		uid, gid sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, `SELECT id, subject, body, beam_line, uid, gid FROM experiments WHERE proposal_id = ?`, e.ProposalID).
		Scan(&id, &cur.Subject, &cur.Body, &cur.BeamLine, &uid, &gid)
	switch {
	case err == sql.ErrNoRows:
		res, err := tx.ExecContext(ctx, `INSERT INTO experiments (proposal_id, subject, body, beam_line, uid, gid, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			e.ProposalID, subject, e.Body, beamLine, nullInt(e.UID), nullInt(e.GID), now)
		if err != nil {
			return 0, false, fmt.Errorf("experiment %s: %w", e.ProposalID, err)
		}
		if id, err = res.LastInsertId(); err != nil {
			return 0, false, err
		}
		changed = true
	case err != nil:
		return 0, false, fmt.Errorf("experiment %s: %w", e.ProposalID, err)
	case cur.Subject != subject || cur.Body != e.Body || cur.BeamLine != beamLine || !sameInt(intPtr(uid), e.UID) || !sameInt(intPtr(gid), e.GID):
		if _, err := tx.ExecContext(ctx, `UPDATE experiments SET subject = ?, body = ?, beam_line = ?, uid = ?, gid = ?, updated_at = ? WHERE id = ?`,
			subject, e.Body, beamLine, nullInt(e.UID), nullInt(e.GID), now, id); err != nil {
			return 0, false, fmt.Errorf("experiment %s: %w", e.ProposalID, err)
		}
		changed = true
	}
	for _, ss := range e.Sessions {
		wrote, err := s.putSession(ctx, tx, id, ss)
		if err != nil {
			return 0, false, fmt.Errorf("experiment %s: %w", e.ProposalID, err)
		}
		changed = changed || wrote
	}
	if changed {
		if err := bumpParticipants(ctx, tx, id); err != nil {
			return 0, false, fmt.Errorf("experiment %s: %w", e.ProposalID, err)
		}
	}
	return id, changed, nil
}

// bumpUser marks the user's experiments page changed (see User.ExperimentsVersion).
func bumpUser(ctx context.Context, db execer, userID int64) error {
	_, err := db.ExecContext(ctx, `UPDATE users SET experiments_version = experiments_version + 1 WHERE id = ?`, userID)
	return err
}

// bumpParticipants marks the pages of everyone taking part in the experiment changed.
func bumpParticipants(ctx context.Context, db execer, experimentID int64) error {
	_, err := db.ExecContext(ctx, `UPDATE users SET experiments_version = experiments_version + 1
		WHERE id IN (SELECT user_id FROM user_experiments WHERE experiment_id = ?)`, experimentID)
	return err
}

func sameInt(a, b *int) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// sameDate compares at the microsecond, what MySQL's DATETIME(6) keeps.
func sameDate(stored sql.NullTime, d time.Time) bool {
	want := dateArg(d)
	return stored.Valid == want.Valid && (!want.Valid || stored.Time.Equal(want.Time.Truncate(time.Microsecond)))
}

// putSession upserts one session; wrote says whether a row was written.
func (s *Store) putSession(ctx context.Context, tx *sql.Tx, experimentID int64, ss calipso.Session) (wrote bool, err error) {
	if strings.TrimSpace(ss.SessionNumber) == "" || len(ss.SessionNumber) > 50 {
		return false, fmt.Errorf("%w: session_number must be 1 to 50 characters", ErrInvalid)
	}
	subject := truncate(ss.Subject, 255)
	var (
		cur        calipso.Session
		start, end sql.NullTime
	)
	err = tx.QueryRowContext(ctx, `SELECT subject, body, start_date, end_date, data_set_path FROM sessions WHERE experiment_id = ? AND session_number = ?`,
		experimentID, ss.SessionNumber).Scan(&cur.Subject, &cur.Body, &start, &end, &cur.DataSetPath)
	switch {
	case err == sql.ErrNoRows:
		_, err = tx.ExecContext(ctx, `INSERT INTO sessions (experiment_id, session_number, subject, body, start_date, end_date, data_set_path) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			experimentID, ss.SessionNumber, subject, ss.Body, dateArg(ss.StartDate), dateArg(ss.EndDate), ss.DataSetPath)
	case err != nil:
	case cur.Subject == subject && cur.Body == ss.Body && cur.DataSetPath == ss.DataSetPath && sameDate(start, ss.StartDate) && sameDate(end, ss.EndDate):
		return false, nil
	default:
		_, err = tx.ExecContext(ctx, `UPDATE sessions SET subject = ?, body = ?, start_date = ?, end_date = ?, data_set_path = ? WHERE experiment_id = ? AND session_number = ?`,
			subject, ss.Body, dateArg(ss.StartDate), dateArg(ss.EndDate), ss.DataSetPath, experimentID, ss.SessionNumber)
	}
	if err != nil {
		return false, fmt.Errorf("session %s: %w", ss.SessionNumber, err)
	}
	return true, nil
}

// HasExperiment reports whether the proposal is stored.
func (s *Store) HasExperiment(ctx context.Context, proposalID string) (bool, error) {
	var n int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM experiments WHERE proposal_id = ?`, proposalID).Scan(&n); err != nil {
		return false, fmt.Errorf("experiment %s: %w", proposalID, s.wrap(err))
	}
	return n > 0, nil
}

// LinkOf returns the user's participation in a proposal: the link id (what
// favorite/ takes) and its favourite flag; ErrNotFound when the user has none.
func (s *Store) LinkOf(ctx context.Context, userID int64, proposalID string) (linkID int64, favorite bool, err error) {
	err = s.queryRow(ctx, `SELECT l.id, l.favorite FROM user_experiments l JOIN experiments e ON e.id = l.experiment_id
		WHERE l.user_id = ? AND e.proposal_id = ?`, userID, proposalID).Scan(&linkID, &favorite)
	if err != nil {
		return 0, false, fmt.Errorf("participation of user %d in %s: %w", userID, proposalID, s.wrap(err))
	}
	return linkID, favorite, nil
}

// SyncUserExperiments stores what the user office answered for a user: experiments
// and sessions upserted, the user linked to each (favourites kept), links to
// experiments the office no longer lists removed, and the fetch time stamped.
func (s *Store) SyncUserExperiments(ctx context.Context, userID int64, list []calipso.Experiment) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		keep := map[int64]bool{}
		for _, e := range list {
			id, _, err := s.putExperiment(ctx, tx, e)
			if err != nil {
				return err
			}
			keep[id] = true
			if err := s.link(ctx, tx, userID, id); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT experiment_id FROM user_experiments WHERE user_id = ?`, userID)
		if err != nil {
			return err
		}
		var drop []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			if !keep[id] {
				drop = append(drop, id)
			}
		}
		rows.Close()
		for _, id := range drop {
			if _, err := tx.ExecContext(ctx, `DELETE FROM user_experiments WHERE user_id = ? AND experiment_id = ?`, userID, id); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE users SET experiments_fetched_at = ?, experiments_version = experiments_version + 1 WHERE id = ?`, s.now(), userID)
		return err
	})
}

func (s *Store) link(ctx context.Context, tx *sql.Tx, userID, experimentID int64) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM user_experiments WHERE user_id = ? AND experiment_id = ?`, userID, experimentID).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO user_experiments (user_id, experiment_id, favorite) VALUES (?, ?, FALSE)`, userID, experimentID); err != nil {
		return err
	}
	return bumpUser(ctx, tx, userID)
}

// Link makes a user a participant of an experiment (idempotent).
func (s *Store) Link(ctx context.Context, actor, username, proposalID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		uid, eid, err := s.userAndExperiment(ctx, tx, username, proposalID)
		if err != nil {
			return err
		}
		s.audit(ctx, tx, actor, "link", "experiment", proposalID, map[string]string{"user": username})
		return s.link(ctx, tx, uid, eid)
	})
}

// Unlink removes a user from an experiment (idempotent).
func (s *Store) Unlink(ctx context.Context, actor, username, proposalID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		uid, eid, err := s.userAndExperiment(ctx, tx, username, proposalID)
		if err != nil {
			return err
		}
		s.audit(ctx, tx, actor, "unlink", "experiment", proposalID, map[string]string{"user": username})
		res, err := tx.ExecContext(ctx, `DELETE FROM user_experiments WHERE user_id = ? AND experiment_id = ?`, uid, eid)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return bumpUser(ctx, tx, uid)
		}
		return nil
	})
}

func (s *Store) userAndExperiment(ctx context.Context, tx *sql.Tx, username, proposalID string) (int64, int64, error) {
	var uid, eid int64
	if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = ?`, username).Scan(&uid); err != nil {
		return 0, 0, fmt.Errorf("user %q: %w", username, s.wrap(err))
	}
	if err := tx.QueryRowContext(ctx, `SELECT id FROM experiments WHERE proposal_id = ?`, proposalID).Scan(&eid); err != nil {
		return 0, 0, fmt.Errorf("experiment %q: %w", proposalID, s.wrap(err))
	}
	return uid, eid, nil
}

// RemoveExperiment deletes an experiment, its sessions and links.
func (s *Store) RemoveExperiment(ctx context.Context, actor, proposalID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM experiments WHERE proposal_id = ?`, proposalID).Scan(&id); err != nil {
			return fmt.Errorf("experiment %q: %w", proposalID, s.wrap(err))
		}
		if err := bumpParticipants(ctx, tx, id); err != nil {
			return fmt.Errorf("remove experiment %q: %w", proposalID, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM experiments WHERE id = ?`, id); err != nil {
			return fmt.Errorf("remove experiment %q: %w", proposalID, err)
		}
		s.audit(ctx, tx, actor, "remove", "experiment", proposalID, nil)
		return nil
	})
}

// SetFavorite sets the favourite flag of a link, which must be the user's own
// (ErrForbidden otherwise, ErrNotFound when there is no such link).
func (s *Store) SetFavorite(ctx context.Context, userID, linkID int64, favorite bool) error {
	var owner int64
	if err := s.queryRow(ctx, `SELECT user_id FROM user_experiments WHERE id = ?`, linkID).Scan(&owner); err != nil {
		return fmt.Errorf("experiment link %d: %w", linkID, s.wrap(err))
	}
	if owner != userID {
		return fmt.Errorf("experiment link %d: %w", linkID, ErrForbidden)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE user_experiments SET favorite = ? WHERE id = ?`, favorite, linkID); err != nil {
			return err
		}
		return bumpUser(ctx, tx, userID)
	})
	if err != nil {
		return fmt.Errorf("favorite %d: %w", linkID, err)
	}
	return nil
}

// SessionOf is an experiment session a user may launch for.
type SessionOf struct {
	SessionID  int64
	Experiment calipso.Experiment // with only this session in Sessions
}

// UserSession finds a session of an experiment the user takes part in. ref is
// "proposal~session", or one value matched against proposal ids and session numbers
// (the frontend sends either, as CalipsoPlus accepted).
func (s *Store) UserSession(ctx context.Context, userID int64, ref string) (SessionOf, error) {
	proposal, session, split := strings.Cut(ref, "~")
	q := `SELECT s.id, e.proposal_id, e.subject, e.body, e.beam_line, e.uid, e.gid, s.session_number, s.subject, s.body, s.data_set_path,
		s.start_date, s.end_date
		FROM user_experiments l JOIN experiments e ON e.id = l.experiment_id JOIN sessions s ON s.experiment_id = e.id
		WHERE l.user_id = ? AND `
	args := []any{userID}
	if split {
		q += `e.proposal_id = ? AND s.session_number = ?`
		args = append(args, proposal, session)
	} else {
		q += `(s.session_number = ? OR e.proposal_id = ?)`
		args = append(args, ref, ref)
	}
	rows, err := s.query(ctx, q+` ORDER BY s.id LIMIT 2`, args...)
	if err != nil {
		return SessionOf{}, s.wrap(err)
	}
	defer rows.Close()
	var found []SessionOf
	for rows.Next() {
		var (
			so         SessionOf
			ss         calipso.Session
			uid, gid   sql.NullInt64
			start, end sql.NullTime
		)
		e := &so.Experiment
		if err := rows.Scan(&so.SessionID, &e.ProposalID, &e.Subject, &e.Body, &e.BeamLine, &uid, &gid, &ss.SessionNumber, &ss.Subject, &ss.Body, &ss.DataSetPath,
			&start, &end); err != nil {
			return SessionOf{}, s.wrap(err)
		}
		if start.Valid {
			ss.StartDate = start.Time.UTC()
		}
		if end.Valid {
			ss.EndDate = end.Time.UTC()
		}
		e.UID, e.GID = intPtr(uid), intPtr(gid)
		e.Sessions = []calipso.Session{ss}
		found = append(found, so)
	}
	if err := rows.Err(); err != nil {
		return SessionOf{}, s.wrap(err)
	}
	switch len(found) {
	case 0:
		return SessionOf{}, fmt.Errorf("experiment %q: %w", ref, ErrNotFound)
	case 1:
		return found[0], nil
	}
	return SessionOf{}, fmt.Errorf("%w: experiment %q names more than one session: use proposal~session", ErrInvalid, ref)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
