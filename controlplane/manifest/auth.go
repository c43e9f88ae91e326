package manifest

// AdminTokenEnv names the environment variable holding the admin API token of the control
// plane (and of llmproxyctl). With TokenEnv it decides the ADS stream's token
// (StreamToken), which both binaries read, so it is part of the wire contract.
const AdminTokenEnv = "LLMPROXY_ADMIN_AUTH_TOKEN"

// StreamToken returns the bearer token of the ADS stream and the variable it came from:
// TokenEnv when set, else AdminTokenEnv, so that a control plane with an admin token
// never serves the fleet's secrets to a client without one (and a proxy given only the
// admin token sends it). Both empty: "" and "" (the stream is open). getenv is os.Getenv
// outside tests.
func StreamToken(getenv func(string) string) (token, from string) {
	if t := getenv(TokenEnv); t != "" {
		return t, TokenEnv
	}
	if t := getenv(AdminTokenEnv); t != "" {
		return t, AdminTokenEnv
	}
	return "", ""
}
