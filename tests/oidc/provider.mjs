// A real OpenID Connect provider (npm oidc-provider) on loopback for the single sign-on tests.
//
//   OIDC_PORT=9400 OIDC_CLIENT_ID=evp OIDC_CLIENT_SECRET=s3cret \
//   OIDC_REDIRECT_URIS=http://alpha.localhost:8000/accounts/oidc/test-idp/login/callback/ \
//   node tests/oidc/provider.mjs
//
// Issuer http://127.0.0.1:<OIDC_PORT>; one confidential client (client_secret_post, PKCE); people
// sign in at its built-in development form (devInteractions) with one of the logins below and
// any password. Each has a verified email and a `groups` claim (given with the profile scope).
import Provider from 'oidc-provider';

const ACCOUNTS = {
  alice: { email: 'alice@idp.example', name: 'Alice Admin', groups: ['ev-admins', 'staff'] },
  bob: { email: 'bob@idp.example', name: 'Bob Finance', groups: ['ev-finance'] },
  carol: { email: 'carol@idp.example', name: 'Carol Nogroup', groups: [] },
  dave: { email: 'dave@idp.example', name: 'Dave Energy', groups: ['ev-energy'] },
  erin: { email: 'erin@idp.example', name: 'Erin Energy', groups: ['ev-energy'] },
};

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: set ${name}`);
    process.exit(2);
  }
  return value;
}

const port = Number(required('OIDC_PORT'));
const issuer = `http://127.0.0.1:${port}`;

const configuration = {
  clients: [
    {
      client_id: required('OIDC_CLIENT_ID'),
      client_secret: required('OIDC_CLIENT_SECRET'),
      redirect_uris: required('OIDC_REDIRECT_URIS').split(','),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: account.email, email_verified: true, name: account.name, groups: account.groups };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['evplatform-test-oidc-cookie-key'] },
  pkce: { required: () => true },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, error) => console.error('provider.mjs: server_error', error));
const server = provider.listen(port, '127.0.0.1', () => console.log(`provider.mjs: listening on ${issuer}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
