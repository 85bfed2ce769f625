"""Users, roles and worker heartbeats of one organisation.

Schema: every schema. In a tenant schema these are the organisation's own people; in public
they are platform staff (onboarding, charger registry). A user of one tenant does not exist
in any other schema, so it cannot sign in anywhere else.
"""
