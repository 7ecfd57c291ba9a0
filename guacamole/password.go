package guacamole

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// SaltSize is the size of the salts Guacamole makes (password_salt is BINARY(32)).
const SaltSize = 32

// HashPassword hashes a password as Guacamole's JDBC authentication does: SHA-256 over
// the password followed by the upper-case hex of the salt. A nil salt gives the
// unsalted hash Guacamole also accepts.
func HashPassword(password string, salt []byte) []byte {
	h := sha256.New()
	h.Write([]byte(password))
	if salt != nil {
		h.Write([]byte(strings.ToUpper(hex.EncodeToString(salt))))
	}
	return h.Sum(nil)
}

// newSalt returns SaltSize random bytes.
func newSalt() []byte {
	salt := make([]byte, SaltSize)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails (it crashes the program instead)
	return salt
}
