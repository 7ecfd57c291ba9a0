package guacamole

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// The guacadmin account of Guacamole's 002-create-admin-user.sql (password "guacadmin").
const (
	guacadminHash = "CA458A7D494E3BE824F5E1E175A1556C0F8EEF2C2D7DF3633BEC4A29C4411960"
	guacadminSalt = "FE24ADC5E11E2B25288D1704ABE67A79E342ECC26064CE69C5B3177795A82264"
)

func TestHashPasswordMatchesGuacamole(t *testing.T) {
	salt, _ := hex.DecodeString(guacadminSalt)
	hash, _ := hex.DecodeString(guacadminHash)
	tests := []struct {
		password string
		match    bool
	}{
		{"guacadmin", true},
		{"Guacadmin", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.password, func(t *testing.T) {
			if got := bytes.Equal(HashPassword(tt.password, salt), hash); got != tt.match {
				t.Errorf("HashPassword(%q) matches guacadmin's hash: %v, want %v", tt.password, got, tt.match)
			}
		})
	}
	// Lower-case hex of the salt is not what Guacamole hashes.
	lower := sha256.Sum256([]byte("guacadmin" + hex.EncodeToString(salt)))
	if bytes.Equal(lower[:], hash) {
		t.Errorf("test vector does not distinguish upper from lower case hex")
	}
}

// The constants above are the ones in the fixture each facility installs.
func TestGuacadminFixtureVector(t *testing.T) {
	for _, d := range []Dialect{MySQL, Postgres} {
		t.Run(string(d), func(t *testing.T) {
			script, err := os.ReadFile(filepath.Join(testenv.GuacamoleFixtures(t, fixturesName(d)), "002-create-admin-user.sql"))
			if err != nil {
				t.Fatal(err)
			}
			hexes := regexp.MustCompile(`(?i)[0-9a-f]{64}`).FindAllString(string(script), -1)
			if len(hexes) != 2 {
				t.Fatalf("found %d 32-byte hex values in the fixture, want hash and salt", len(hexes))
			}
			hash, _ := hex.DecodeString(hexes[0])
			salt, _ := hex.DecodeString(hexes[1])
			if !bytes.Equal(HashPassword("guacadmin", salt), hash) {
				t.Errorf("guacadmin does not verify against the fixture's hash and salt")
			}
		})
	}
}
