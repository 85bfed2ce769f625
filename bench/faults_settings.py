"""Settings of the fault benchmark's own platform (bench/faults_bench.py): development settings
with fast password hashes, since 128 simulated chargers connect at once at every scenario and
the benchmark measures the site limit, not PBKDF2. Everything else (timings included) comes from
the environment the benchmark sets, as in a deployment.
"""

from evplatform.settings.local import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
