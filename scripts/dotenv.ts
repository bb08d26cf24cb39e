// Reads .env of the working directory (the repository root under npm) into process.env, where
// a variable that the caller's environment already sets wins: `LOG_LEVEL=debug npm start` is
// debug whatever .env says. Node's own parser (process.loadEnvFile): KEY=value lines, # comments,
// quoted values. Loaded before the entry point by package.json's scripts and scripts/start
// (`node --import ./scripts/dotenv.ts ...`), not by the processes themselves, so a test or an
// image that starts api/main.ts directly sees only the environment it was given.
import { existsSync } from 'node:fs';

if (existsSync('.env')) process.loadEnvFile('.env');
