package demo

import (
	"os"
	"path/filepath"
	"testing"
)

// TestVNCPassword: the desktop reads its password from the file VNC_PASSWORD_FILE
// names, as Calipso hands it over, else from VNC_PASSWORD; a file it cannot read is
// an error, never a desktop without a password.
func TestVNCPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "vnc_password")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{"file", map[string]string{"VNC_PASSWORD_FILE": file}, "from-file", false},
		{"file wins over the environment", map[string]string{"VNC_PASSWORD_FILE": file, "VNC_PASSWORD": "from-env"}, "from-file", false},
		{"environment", map[string]string{"VNC_PASSWORD": "from-env"}, "from-env", false},
		{"none", nil, "", false},
		{"file missing", map[string]string{"VNC_PASSWORD_FILE": filepath.Join(dir, "missing"), "VNC_PASSWORD": "from-env"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := vncPassword(func(k string) string { return tt.env[k] })
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("vncPassword = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
