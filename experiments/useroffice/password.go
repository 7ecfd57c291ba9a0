package useroffice

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/calipsoplus/calipso"
)

// ErrBadHash: a stored password hash is not in Django's pbkdf2_sha256 format.
var ErrBadHash = calipso.NewError(calipso.EINVALID, "bad password hash")

const (
	hashAlgorithm = "pbkdf2_sha256"
	// MaxIterations bounds the work a data file can ask for per login.
	MaxIterations = 10_000_000
	// DemoIterations is the iteration count of the embedded demo data: cheap logins for
	// demos and tests, far too low for real accounts (Django uses ~1,000,000).
	DemoIterations = 1000
)

// HashPassword hashes password in Django's format
// `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` with a random 22-character salt, so
// that hashes move freely between Django sites and this office. Iterations are clamped
// to [1, MaxIterations]. It returns "" only if key derivation fails, which can happen
// only in FIPS 140-only mode.
func HashPassword(password string, iterations int) string {
	iterations = min(max(iterations, 1), MaxIterations)
	salt := rand.Text()[:22] // base32 text, 5 bits a character: 110 bits
	key, err := derive(password, salt, iterations)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s$%d$%s$%s", hashAlgorithm, iterations, salt, base64.StdEncoding.EncodeToString(key))
}

// VerifyPassword reports whether password matches the Django pbkdf2_sha256 hash encoded,
// comparing in constant time. It fails with ErrBadHash when encoded is malformed.
func VerifyPassword(password, encoded string) (bool, error) {
	h, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	key, err := derive(password, h.salt, h.iterations)
	if err != nil {
		return false, fmt.Errorf("derive key: %w", err)
	}
	return subtle.ConstantTimeCompare(key, h.key) == 1, nil
}

type parsedHash struct {
	iterations int
	salt       string
	key        []byte
}

func parseHash(encoded string) (parsedHash, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 4 || parts[0] != hashAlgorithm {
		return parsedHash{}, fmt.Errorf("%w: want %s$<iterations>$<salt>$<base64 hash>", ErrBadHash, hashAlgorithm)
	}
	iterations, err := strconv.Atoi(parts[1])
	if err != nil || iterations < 1 || iterations > MaxIterations {
		return parsedHash{}, fmt.Errorf("%w: iterations %q not in 1..%d", ErrBadHash, parts[1], MaxIterations)
	}
	if parts[2] == "" {
		return parsedHash{}, fmt.Errorf("%w: empty salt", ErrBadHash)
	}
	key, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil || len(key) != sha256.Size {
		return parsedHash{}, fmt.Errorf("%w: hash is not %d base64-encoded bytes", ErrBadHash, sha256.Size)
	}
	return parsedHash{iterations: iterations, salt: parts[2], key: key}, nil
}

func derive(password, salt string, iterations int) ([]byte, error) {
	return pbkdf2.Key(sha256.New, password, []byte(salt), iterations, sha256.Size)
}
