package guacamole

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
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

func TestNewPassword(t *testing.T) {
	a, b := NewPassword(), NewPassword()
	if len(a) < 20 || a == b {
		t.Errorf("NewPassword gave %q and %q: want long, different passwords", a, b)
	}
}

func TestEncryptedJSONToken(t *testing.T) {
	key, _ := hex.DecodeString("4c0b569e4c96df157eee1b65dd0e4d41")
	payload := JSONAuth{
		Username: "alice",
		Expires:  1700000000000,
		Connections: map[string]JSONConnection{
			"calipso-prod-42": {Protocol: "rdp", Parameters: map[string]string{"hostname": "10.0.0.2", "port": "3389"}},
		},
	}
	token, err := EncryptedJSONToken(key, payload)
	if err != nil {
		t.Fatalf("EncryptedJSONToken: %v", err)
	}
	// Decrypt as guacamole-auth-json does.
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil || len(raw)%aes.BlockSize != 0 {
		t.Fatalf("token is not base64 of whole AES blocks: %v", err)
	}
	block, _ := aes.NewCipher(key)
	plain := make([]byte, len(raw))
	cipher.NewCBCDecrypter(block, make([]byte, aes.BlockSize)).CryptBlocks(plain, raw)
	pad := int(plain[len(plain)-1])
	if pad < 1 || pad > aes.BlockSize || !bytes.Equal(plain[len(plain)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		t.Fatalf("bad PKCS#7 padding %d", pad)
	}
	plain = plain[:len(plain)-pad]
	sig, data := plain[:sha256.Size], plain[sha256.Size:]
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		t.Errorf("signature does not verify")
	}
	var got JSONAuth
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("payload: %v", err)
	}
	if got.Username != "alice" || got.Expires != payload.Expires || got.Connections["calipso-prod-42"].Parameters["port"] != "3389" {
		t.Errorf("payload round trip = %+v", got)
	}

	for _, bad := range []struct {
		name string
		key  []byte
		p    JSONAuth
	}{
		{"short key", key[:8], payload},
		{"no username", key, JSONAuth{}},
	} {
		t.Run(bad.name, func(t *testing.T) {
			if _, err := EncryptedJSONToken(bad.key, bad.p); !errors.Is(err, ErrInvalid) {
				t.Errorf("EncryptedJSONToken = %v, want ErrInvalid", err)
			}
		})
	}
}
