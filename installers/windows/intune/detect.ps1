<#
.SYNOPSIS
  Intune custom detection script for Governor: "installed" means the MSI
  recorded a version >= $MinimumVersion and the executable exists. Intune
  reads detection from exit code 0 plus any output on STDOUT.
#>
$MinimumVersion = [version]"0.1.0"   # set to the version this Intune app deploys

$key = Get-ItemProperty -Path "HKLM:\SOFTWARE\Governor\Governor" -ErrorAction SilentlyContinue
if (-not $key -or -not $key.Version -or -not $key.InstallDir) { exit 1 }
if (-not (Test-Path (Join-Path $key.InstallDir "governor.exe"))) { exit 1 }
if ([version]$key.Version -lt $MinimumVersion) { exit 1 }
Write-Output "Governor $($key.Version) installed in $($key.InstallDir)"
exit 0
