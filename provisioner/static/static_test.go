package static_test

import (
	"context"
	"errors"
	"regexp"
	"testing"

	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/static"
)

func TestStart(t *testing.T) {
	tests := []struct {
		name    string
		spec    provisioner.Spec
		wantURL string
		wantErr error
	}{
		{
			name:    "https link",
			spec:    provisioner.Spec{Instance: "alba", ResourceID: 7, Owner: "ana", Image: "https://jupyter.example.org/hub/?x=1"},
			wantURL: "https://jupyter.example.org/hub/?x=1",
		},
		{
			name:    "http link, root uid is irrelevant",
			spec:    provisioner.Spec{Instance: "alba", ResourceID: 8, Image: "http://host:8080/app"},
			wantURL: "http://host:8080/app",
		},
		{name: "not a URL", spec: provisioner.Spec{Instance: "alba", ResourceID: 9, Image: "jupyter/base:latest"}, wantErr: provisioner.ErrInvalid},
		{name: "other scheme", spec: provisioner.Spec{Instance: "alba", ResourceID: 9, Image: "javascript:alert(1)"}, wantErr: provisioner.ErrInvalid},
		{name: "empty link", spec: provisioner.Spec{Instance: "alba", ResourceID: 9}, wantErr: provisioner.ErrInvalid},
		{name: "no resource id", spec: provisioner.Spec{Instance: "alba", Image: "https://x.org/"}, wantErr: provisioner.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := static.New().Start(context.Background(), tt.spec)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Start error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got.ID) {
				t.Errorf("ID %q: want 32 hex characters, as the original's", got.ID)
			}
			again, _ := static.New().Start(context.Background(), tt.spec)
			if again.ID != got.ID {
				t.Errorf("a second Start gave ID %q, the first %q: want the same", again.ID, got.ID)
			}
			want := provisioner.Workload{
				ID:         got.ID,
				Name:       tt.spec.Name(),
				Owner:      tt.spec.Owner,
				ResourceID: tt.spec.ResourceID,
				State:      provisioner.StateRunning,
				URL:        tt.wantURL,
			}
			if got != want {
				t.Errorf("Start = %+v, want %+v", got, want)
			}
		})
	}
}
