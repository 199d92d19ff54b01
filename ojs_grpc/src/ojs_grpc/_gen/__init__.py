"""Generated from openjobspec/ojs-proto@3a558087aefa518f82e91210669670afd2f7f055 by ojs_grpc/scripts/generate.py; do not edit."""
