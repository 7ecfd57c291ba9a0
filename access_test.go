package calipso_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
)

func TestAccessOf(t *testing.T) {
	def := calipso.Quota{MaxSimultaneous: 5, CPUs: 10, MemoryBytes: 30 << 30, DiskBytes: 80 << 30}
	small := calipso.Quota{MaxSimultaneous: 1, CPUs: 2, MemoryBytes: 4 << 30, DiskBytes: 100 << 30}
	big := calipso.Quota{MaxSimultaneous: 10, CPUs: 1, MemoryBytes: 64 << 30, DiskBytes: 1 << 30}
	roles := map[string]calipso.Role{
		"visitor": {Permissions: []calipso.Permission{calipso.PermLaunch}, Quota: &small, Images: []string{"jupyter"}},
		"staff":   {Permissions: []calipso.Permission{calipso.PermLaunch, calipso.PermSupportAccess}, Quota: &big, Images: []string{"desktop"}},
		"plain":   {Permissions: []calipso.Permission{calipso.PermLaunchOwn}},
	}
	for _, tt := range []struct {
		name   string
		roles  []string
		perms  []calipso.Permission
		quota  calipso.Quota
		images map[string]bool // image → may use
	}{
		{"none", nil, nil, def, map[string]bool{"jupyter": false}},
		{"one role", []string{"visitor"}, []calipso.Permission{calipso.PermLaunch}, small, map[string]bool{"jupyter": true, "desktop": false}},
		{"each limit the largest", []string{"visitor", "staff"}, []calipso.Permission{calipso.PermLaunch, calipso.PermSupportAccess},
			calipso.Quota{MaxSimultaneous: 10, CPUs: 2, MemoryBytes: 64 << 30, DiskBytes: 100 << 30}, map[string]bool{"jupyter": true, "desktop": true, "other": false}},
		{"a role without a quota counts as the default", []string{"visitor", "plain"}, []calipso.Permission{calipso.PermLaunch, calipso.PermLaunchOwn},
			calipso.Quota{MaxSimultaneous: 5, CPUs: 10, MemoryBytes: 30 << 30, DiskBytes: 100 << 30}, map[string]bool{"other": true}},
		{"unknown roles are ignored", []string{"ghost", "visitor"}, []calipso.Permission{calipso.PermLaunch}, small, map[string]bool{"jupyter": true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := calipso.AccessOf(roles, tt.roles)
			if !slices.Equal(a.Permissions, tt.perms) {
				t.Errorf("permissions %v, want %v", a.Permissions, tt.perms)
			}
			if got := a.QuotaOr(def); got != tt.quota {
				t.Errorf("quota %+v, want %+v", got, tt.quota)
			}
			for im, want := range tt.images {
				if a.MayUse(im) != want {
					t.Errorf("MayUse(%q) = %v", im, !want)
				}
			}
		})
	}
	t.Run("a scope narrows, never widens", func(t *testing.T) {
		a := calipso.AccessOf(roles, []string{"staff"}).Within([]calipso.Permission{calipso.PermSupportAccess, calipso.PermAdmin})
		if !slices.Equal(a.Permissions, []calipso.Permission{calipso.PermSupportAccess}) {
			t.Errorf("permissions %v", a.Permissions)
		}
	})
	t.Run("policy", func(t *testing.T) {
		p := calipso.DefaultPolicy()
		u := calipso.User{Username: "carol", IsAdmin: true, Roles: []string{"staff"}}
		if got := p.RoleNames(u); !slices.Equal(got, []string{"admin", "staff", "user"}) {
			t.Errorf("roles %v", got)
		}
		if !p.Access(u).Can(calipso.PermAdmin) || (calipso.Policy{}).Access(calipso.User{}).Can(calipso.PermAdmin) {
			t.Error("admin is the is_admin flag's, and only its")
		}
	})
}

func TestLifetime(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	session := &calipso.Session{EndDate: now.Add(24 * time.Hour)}
	policy := calipso.Lifetime{Default: 72 * time.Hour, Images: map[string]time.Duration{"jupyter": 8 * time.Hour, "forever": 0}, TieToSession: true, SessionGrace: 12 * time.Hour}
	for _, tt := range []struct {
		name    string
		policy  calipso.Lifetime
		image   string
		access  calipso.Access
		session *calipso.Session
		want    *time.Time
	}{
		{"none", calipso.Lifetime{}, "desktop", calipso.Access{}, nil, nil},
		{"default", policy, "desktop", calipso.Access{}, nil, at(72 * time.Hour)},
		{"per image", policy, "jupyter", calipso.Access{}, nil, at(8 * time.Hour)},
		{"an image without one", policy, "forever", calipso.Access{}, nil, nil},
		{"the role bounds it", policy, "desktop", calipso.Access{MaxLifetime: 48 * time.Hour}, nil, at(48 * time.Hour)},
		{"the role gives one", policy, "forever", calipso.Access{MaxLifetime: 48 * time.Hour}, nil, at(48 * time.Hour)},
		{"the session's end comes first", policy, "desktop", calipso.Access{}, session, at(36 * time.Hour)},
		{"the lifetime comes first", policy, "jupyter", calipso.Access{}, session, at(8 * time.Hour)},
		{"after the beamtime", policy, "desktop", calipso.Access{}, &calipso.Session{EndDate: now.Add(-48 * time.Hour)}, at(0)},
		{"a session without an end", policy, "desktop", calipso.Access{}, &calipso.Session{}, at(72 * time.Hour)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.ExpiresAt(now, tt.image, tt.access, tt.session)
			if (got == nil) != (tt.want == nil) || (got != nil && !got.Equal(*tt.want)) {
				t.Fatalf("ExpiresAt = %v, want %v", got, tt.want)
			}
		})
	}
	a := calipso.Access{MaxLifetime: 48 * time.Hour}
	if !a.WithinLimit(now, now.Add(48*time.Hour)) || a.WithinLimit(now, now.Add(49*time.Hour)) || !(calipso.Access{}).WithinLimit(now, now.Add(1e6*time.Hour)) {
		t.Error("WithinLimit")
	}
}

func TestReclaimNext(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	p := calipso.Reclaim{ExpiryAction: calipso.ActionStop, IdleAfter: 4 * time.Hour, IdleAction: calipso.ActionRemove, WarnBefore: time.Hour}
	for _, tt := range []struct {
		name         string
		r            calipso.Resource
		cause, doing string
		when         time.Time
		ok           bool
	}{
		{"nothing due", calipso.Resource{State: calipso.Running}, "", "", time.Time{}, false},
		{"not live", calipso.Resource{State: calipso.Stopped, ExpiresAt: at(0)}, "", "", time.Time{}, false},
		{"expiry", calipso.Resource{State: calipso.Running, ExpiresAt: at(time.Hour)}, calipso.CauseExpired, calipso.ActionStop, now.Add(time.Hour), true},
		{"idle first", calipso.Resource{State: calipso.Running, ExpiresAt: at(10 * time.Hour), IdleSince: at(0)}, calipso.CauseIdle, calipso.ActionRemove, now.Add(4 * time.Hour), true},
		{"expiry first", calipso.Resource{State: calipso.Running, ExpiresAt: at(2 * time.Hour), IdleSince: at(0)}, calipso.CauseExpired, calipso.ActionStop, now.Add(2 * time.Hour), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cause, doing, when, ok := p.Next(tt.r)
			if cause != tt.cause || doing != tt.doing || !when.Equal(tt.when) || ok != tt.ok {
				t.Fatalf("Next = %q %q %v %v", cause, doing, when, ok)
			}
			if p.Notice(tt.r) != "" {
				t.Error("a notice before any warning")
			}
		})
	}
	warned := calipso.Resource{State: calipso.Running, ExpiresAt: at(time.Hour), WarnedAt: at(0)}
	if n := p.Notice(warned); !strings.Contains(n, "stopped") || !strings.Contains(n, "2026-12-01 11:00") {
		t.Errorf("notice %q", n)
	}
}
