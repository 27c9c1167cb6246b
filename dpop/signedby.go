package dpop

import "github.com/mandatehq/mandate/jose"

// SignedBy reports whether proof is a JWS signed by the key in its own jwk
// header, whose RFC 7638 thumbprint is jkt: whatever else is wrong with
// the proof (its typ, its claims, its age, the request it names), its
// sender holds that key. A thief of a mandate bound to jkt cannot make
// one. It is for telling, once Check has refused a proof, a holder's
// mistake from a presenter without the key.
func SignedBy(proof, jkt string) bool {
	if len(proof) > MaxProofSize {
		return false
	}
	jws, err := jose.Parse(proof)
	if err != nil || jws.Header.JWK == nil || jws.Header.JWK.D != "" {
		return false
	}
	pub, err := jws.VerifyWithJWK()
	return err == nil && jose.Thumbprint(pub) == jkt
}
