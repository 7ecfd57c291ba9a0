package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/quotas"
)

// maxPidsLimit is the largest pids_limit an image may set: Linux's largest pid_max
// (settings.MaxPidsLimit, which store does not import).
const maxPidsLimit = 1 << 22

var publicNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// ValidateImage checks an image record, reporting every problem.
func ValidateImage(im calipso.Image) error {
	var p []string
	if !publicNameRe.MatchString(im.PublicName) {
		p = append(p, "public_name must be 1-100 letters, digits, '.', '_' or '-'")
	}
	if strings.TrimSpace(im.Image) == "" || len(im.Image) > 255 {
		p = append(p, "image is required (at most 255 characters)")
	}
	if !slices.Contains(calipso.Protocols, im.Protocol) {
		p = append(p, fmt.Sprintf("protocol %q is not one of vnc, rdp, http or empty", im.Protocol))
	}
	if !slices.Contains(calipso.ResourceTypes, im.ResourceType) {
		p = append(p, fmt.Sprintf("resource_type %q is not one of docker, kubernetes, static link or virtual machine", im.ResourceType))
	}
	if im.CPU < 0 || im.CPU > 1024 {
		p = append(p, "cpu must be between 0 and 1024")
	}
	if _, err := quotas.ParseSize(im.Memory); err != nil {
		p = append(p, "memory: "+err.Error())
	}
	if _, err := quotas.ParseSize(im.HDD); err != nil {
		p = append(p, "hdd: "+err.Error())
	}
	if im.PidsLimit < 0 || im.PidsLimit > maxPidsLimit {
		p = append(p, fmt.Sprintf("pids_limit must be between 0 (the settings' workloads.pids_limit) and %d", maxPidsLimit))
	}
	if im.LogRegex != "" {
		if _, err := regexp.Compile(im.LogRegex); err != nil {
			p = append(p, "log_regex: "+err.Error())
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(p, "; "))
	}
	return nil
}

// DefaultImages are the original's seeded images; sites change them with images/.
var DefaultImages = []calipso.Image{
	{PublicName: "base_image", Image: "calipso/desktop-vnc:latest", Protocol: "vnc", CPU: 1, Memory: "2G", HDD: "5G", ResourceType: "docker"},
	{PublicName: "base_jupyter", Image: "jupyter/base-notebook:latest", Protocol: "http", CPU: 1, Memory: "2G", HDD: "5G", ResourceType: "docker",
		LogRegex: `token=([0-9a-f]+)`},
	{PublicName: "base_image_ubuntu", Image: "calipso/desktop-rdp:latest", Protocol: "rdp", CPU: 1, Memory: "2G", HDD: "5G", ResourceType: "docker"},
	{PublicName: "static_link", Image: "https://www.calipsoplus.eu/", Protocol: "http", CPU: 0, Memory: "0", HDD: "0", ResourceType: "static link"},
}

const imageColumns = `public_name, image, protocol, cpu, memory, hdd, resource_type, log_regex, pids_limit`

func scanImage(row interface{ Scan(...any) error }) (calipso.Image, error) {
	var im calipso.Image
	err := row.Scan(&im.PublicName, &im.Image, &im.Protocol, &im.CPU, &im.Memory, &im.HDD, &im.ResourceType, &im.LogRegex, &im.PidsLimit)
	return im, err
}

// Images lists every image by public name.
func (s *Store) Images(ctx context.Context) ([]calipso.Image, error) {
	rows, err := s.query(ctx, `SELECT `+imageColumns+` FROM images ORDER BY public_name`)
	if err != nil {
		return nil, fmt.Errorf("images: %w", s.wrap(err))
	}
	defer rows.Close()
	out := []calipso.Image{}
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, s.wrap(err)
		}
		out = append(out, im)
	}
	return out, s.wrap(rows.Err())
}

// Image returns one image by public name.
func (s *Store) Image(ctx context.Context, publicName string) (calipso.Image, error) {
	im, err := scanImage(s.queryRow(ctx, `SELECT `+imageColumns+` FROM images WHERE public_name = ?`, publicName))
	if err != nil {
		return calipso.Image{}, fmt.Errorf("image %q: %w", publicName, s.wrap(err))
	}
	return im, nil
}

// PutImage creates or replaces an image (every field, PidsLimit too); created reports
// which.
func (s *Store) PutImage(ctx context.Context, actor string, im calipso.Image) (created bool, err error) {
	if err := ValidateImage(im); err != nil {
		return false, err
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM images WHERE public_name = ?`, im.PublicName).Scan(&n); err != nil {
			return err
		}
		args := []any{im.Image, im.Protocol, im.CPU, im.Memory, im.HDD, im.ResourceType, im.LogRegex, im.PidsLimit, im.PublicName}
		var err error
		if n > 0 {
			_, err = tx.ExecContext(ctx, `UPDATE images SET image = ?, protocol = ?, cpu = ?, memory = ?, hdd = ?, resource_type = ?, log_regex = ?, pids_limit = ? WHERE public_name = ?`, args...)
		} else {
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO images (image, protocol, cpu, memory, hdd, resource_type, log_regex, pids_limit, public_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		}
		if err == nil {
			s.audit(ctx, tx, actor, "put", "image", im.PublicName, im)
		}
		return err
	})
	return created, err
}

// DeleteImage removes an image. Resources launched from it keep their own copy.
func (s *Store) DeleteImage(ctx context.Context, actor, publicName string) error {
	res, err := s.exec(ctx, `DELETE FROM images WHERE public_name = ?`, publicName)
	if err != nil {
		return fmt.Errorf("delete image %q: %w", publicName, s.wrap(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("image %q: %w", publicName, ErrNotFound)
	}
	s.audit(ctx, s.db, actor, "delete", "image", publicName, nil)
	return nil
}

// SeedImages inserts the default images when there are no images at all (first start).
func (s *Store) SeedImages(ctx context.Context) error {
	var n int
	if err := s.queryRow(ctx, `SELECT COUNT(*) FROM images`).Scan(&n); err != nil {
		return s.wrap(err)
	}
	if n > 0 {
		return nil
	}
	for _, im := range DefaultImages {
		if _, err := s.PutImage(ctx, "system", im); err != nil {
			return err
		}
	}
	return nil
}

// Quota returns the user's own quota, or ErrNotFound when the defaults apply.
func (s *Store) Quota(ctx context.Context, userID int64) (calipso.Quota, error) {
	var q calipso.Quota
	err := s.queryRow(ctx, `SELECT max_simultaneous, cpu, memory_bytes, hdd_bytes FROM quotas WHERE user_id = ?`, userID).
		Scan(&q.MaxSimultaneous, &q.CPUs, &q.MemoryBytes, &q.DiskBytes)
	if err != nil {
		return calipso.Quota{}, s.wrap(err)
	}
	return q, nil
}

// SetQuota sets the user's own quota.
func (s *Store) SetQuota(ctx context.Context, actor string, userID int64, q calipso.Quota) error {
	if q.MaxSimultaneous < 0 || q.CPUs < 0 || q.MemoryBytes < 0 || q.DiskBytes < 0 {
		return fmt.Errorf("%w: quota values must not be negative", ErrInvalid)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE quotas SET max_simultaneous = ?, cpu = ?, memory_bytes = ?, hdd_bytes = ? WHERE user_id = ?`,
			q.MaxSimultaneous, q.CPUs, q.MemoryBytes, q.DiskBytes, userID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var exists int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM quotas WHERE user_id = ?`, userID).Scan(&exists); err != nil {
				return err
			}
			if exists == 0 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO quotas (user_id, max_simultaneous, cpu, memory_bytes, hdd_bytes) VALUES (?, ?, ?, ?, ?)`,
					userID, q.MaxSimultaneous, q.CPUs, q.MemoryBytes, q.DiskBytes); err != nil {
					return err
				}
			}
		}
		s.audit(ctx, tx, actor, "set_quota", "user", fmt.Sprint(userID), q)
		return nil
	})
}
